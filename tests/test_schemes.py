"""Device kinds are known only in devices/: each scheme owns its options, resource id and host facts."""
import socket

import pytest


def test_options_go_to_the_targets_whose_scheme_takes_them():
    from edgesep.devices import split_options

    given = {"ssh_config": "cfg", "remote_python": "py3", "cpu_mask": None}
    assert split_options(["local", "ssh://pi@h", "adb:X"], given) == {
        "local": {}, "ssh://pi@h": {"ssh_config": "cfg", "remote_python": "py3"}, "adb:X": {"remote_python": "py3"}}


@pytest.mark.parametrize("targets, given, message", [
    (["local"], {"remote_python": "py3"}, "--remote-python applies to remote targets only"),
    (["local", "adb"], {"ssh_config": "x"}, "--ssh-config applies to ssh:// targets only"),
    (["ssh://h"], {"cpu_mask": "f0", "op_profiling": True}, "--cpu-mask, --op-profiling apply to adb targets only"),
])
def test_an_option_no_target_takes_is_a_usage_error(targets, given, message):
    from edgesep.devices import split_options
    from edgesep.errors import EdgesepError

    with pytest.raises(EdgesepError) as e:
        split_options(targets, given)
    assert str(e.value) == message and e.value.exit_code == 2


def test_schemes_own_resources_keys_and_host_facts():
    from edgesep.devices import device_options, device_resource, key_options, scheme_of

    assert device_resource("local") == f"edgesep/local:{socket.gethostname()}"
    assert device_resource("local", "pi5") == "edgesep/local:pi5"
    assert device_resource("ssh://pi@h:22") == "edgesep/ssh:pi@h:22" and device_resource("adb:S1") == "edgesep/adb:S1"
    assert key_options({"ssh_config": "c", "adb_server_port": 5, "cpu_mask": "f0"}) == {"cpu_mask": "f0"}
    assert scheme_of("local").this_machine and not scheme_of("adb").edgetpu_on_host
    assert [o.flag for o in device_options("compare")] == ["--ssh-config", "--remote-python"]
    with pytest.raises(Exception, match="valid forms: local, ssh://"):
        scheme_of("phone")


def test_the_registry_helper():
    from edgesep.errors import UsageError
    from edgesep.registry import Registry

    things = Registry("thing")
    assert things.add("a", 1) == 1 and things.names() == ("a",) and "a" in things and list(things) == [1]
    with pytest.raises(ValueError, match="already registered"):
        things.add("a", 2)
    with pytest.raises(UsageError, match="unknown thing 'b'; known: a"):
        things.get("b")
