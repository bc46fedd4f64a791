# tests/readme/: the README's own commands, run word for word on the built tree (make run, the
# "Try it" curl lines, make token, Ctrl-C), read from README.md itself (tests/readme/readme_test.py).
.PHONY: test-readme
test-readme: all
	@python3 tests/readme/readme_test.py
