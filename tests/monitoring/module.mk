# tests/monitoring/: `make monitoring-check` -- the /metrics exposition (promtool check metrics on
# a live gateway), the alert rules (promtool check rules, promtool test rules) and the Grafana
# dashboard (every query against a real Prometheus scraping a live node). Part of `make test`.
# promtool and prometheus come from Debian's prometheus package (DEB_PACKAGES); a check whose tool
# is missing is reported skipped, never passed.
TEST_STEPS += monitoring-check
.PHONY: monitoring-check

monitoring-check: all
	@BIN=$(abspath $(B))/bin python3 tests/monitoring/monitoring-check.py
