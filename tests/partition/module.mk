# tests/partition/: a real network partition between a center and a leaf region, in network
# namespaces of our own (root and iproute2; says "skip" and counts nothing otherwise).
TEST_STEPS += test-partition
.PHONY: test-partition
test-partition: all
	@tests/partition/partition.sh $(abspath $(B))/bin
