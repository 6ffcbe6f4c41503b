"""Prints the cluster id a Tributary cluster gives librdkafka in its Metadata answer."""
import sys

from confluent_kafka.admin import AdminClient

print(AdminClient({"bootstrap.servers": sys.argv[1]}).list_topics(timeout=30).cluster_id)
