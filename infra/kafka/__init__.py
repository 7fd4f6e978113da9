"""A local single-node Kafka (KRaft) broker run from Apache Kafka's jars, and topic creation."""
