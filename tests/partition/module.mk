# tests/partition/: a real network partition between a center and a leaf region, in network
# namespaces of our own (root and iproute2; says "skip" and counts nothing otherwise).
TEST_STEPS += test-partition
.PHONY: test-partition
test-partition: all
	@tests/partition/partition.sh $(abspath $(B))/bin

# A real network partition inside a replicated center (STORE_REPLICAS=3): each member in a network
# namespace of its own, the leader's link cut and healed (same skip rule).
TEST_STEPS += test-partition-repl
.PHONY: test-partition-repl
test-partition-repl: all
	@tests/partition/partition_repl.sh $(abspath $(B))/bin
