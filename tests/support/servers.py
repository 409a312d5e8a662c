"""Fixtures that start real servers (Redis, Redis Cluster, Sentinel, memcached, moto S3) on free ports."""
