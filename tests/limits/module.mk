# tests/limits/: issue 13's limits on the non-test sources (tests/limits/check_limits.py): no function
# over 120 lines, no .c/.h file over 900 lines, no include circle among the headers. It only reads
# files (well under a second), so it is a step of `make test` too.
# LIMITS_EXEMPT: files reported but not counted while they are being rewritten elsewhere.
LIMITS_EXEMPT ?=
.PHONY: check-limits
TEST_STEPS += check-limits
check-limits:
	@python3 tests/limits/check_limits.py $(addprefix --exempt ,$(LIMITS_EXEMPT)) $(INCS)
