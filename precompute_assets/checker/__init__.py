"""The contract checker: Apache Beam's ``CombineFnTester`` for report tools (``tester``)."""
