"""The one-line error contract, asserted the same way by every CLI test."""


def assert_one_error_line(code, stderr, *needles):
    """A non-zero exit and exactly one ``edgesep: error: ...`` line holding every needle; no traceback."""
    assert code != 0
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("edgesep: error: ") and "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
