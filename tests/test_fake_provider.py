from __future__ import annotations
"""Self-tests of the fake provider with the real SDKs (no cache involved)."""
import openai, anthropic
def test_chat_and_messages_smoke(fake_provider):
    c = openai.OpenAI(api_key="k", base_url=fake_provider.openai_base_url, max_retries=0)
    r = c.chat.completions.create(model="gpt-4o-mini", messages=[{"role":"user","content":"hi there"}])
    print(r)
    s = c.chat.completions.create(model="gpt-4o-mini", messages=[{"role":"user","content":"hi there"}], stream=True, stream_options={"include_usage": True})
    chunks = list(s)
    print("".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices), chunks[-1].usage)
    a = anthropic.Anthropic(api_key="k", base_url=fake_provider.anthropic_base_url, max_retries=0)
    m = a.messages.create(model="claude-x", max_tokens=100, messages=[{"role":"user","content":"hi there"}])
    print(m)
    with a.messages.stream(model="claude-x", max_tokens=100, messages=[{"role":"user","content":"hi there"}]) as st:
        print(st.get_final_message())
    assert fake_provider.count() == 4
