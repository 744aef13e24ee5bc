"""Finding the daemon: where the token file is looked for (the daemon's config search
order, ``HGX_IPC_TOKEN_FILE``), how fast a missing token or a port nobody listens on fails,
``DeadObject`` for the state of dead objects, and the package's metadata (version, typing,
the websockets it runs on)."""

import inspect
import os
import time
from importlib import metadata
from pathlib import Path

import pytest
import websockets

import hgx
from hgx import exceptions
from hgx.link import DEFAULT_CONNECT_TIMEOUT, find_ipc_token_file, ipc_token_search_paths


@pytest.fixture
def no_hgx_env(monkeypatch, tmp_path):
    """An environment where none of the usual places holds a token: HOME and the working
    directory are empty temporary directories."""
    for var in ("HYPERGOLIX_HOME", "HGX_IPC_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "user"
    work = tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    return tmp_path


def test_search_order_is_the_daemons_config_search_order(no_hgx_env, monkeypatch):
    root = no_hgx_env
    assert ipc_token_search_paths() == [
        str(root / "work" / "ipc.token"),
        str(root / "user" / ".hypergolix" / "ipc.token"),
        "/etc/hypergolix/ipc.token",
    ]
    # $HYPERGOLIX_HOME, when set, is the only directory (as for the config).
    monkeypatch.setenv("HYPERGOLIX_HOME", str(root / "elsewhere"))
    assert ipc_token_search_paths() == [str(root / "elsewhere" / "ipc.token")]
    # HGX_IPC_TOKEN_FILE names the file itself; home= beats both.
    monkeypatch.setenv("HGX_IPC_TOKEN_FILE", str(root / "t"))
    assert ipc_token_search_paths() == [str(root / "t")]
    assert ipc_token_search_paths(home=root / "h") == [str(root / "h" / "ipc.token")]


def test_the_working_directory_comes_before_the_users_home(no_hgx_env, alice):
    root = no_hgx_env
    token = (alice.home / "ipc.token").read_text()
    (root / "user" / ".hypergolix").mkdir()
    (root / "user" / ".hypergolix" / "ipc.token").write_text("0" * 64)
    assert find_ipc_token_file() == str(root / "user" / ".hypergolix" / "ipc.token")
    (root / "work" / "ipc.token").write_text(token)
    assert find_ipc_token_file() == str(root / "work" / "ipc.token")
    link = hgx.HGXLink(alice.ipc_port, timeout=10)
    try:
        assert link.whoami.as_str() == alice.fingerprint
    finally:
        link.stop_threadsafe()


def test_hgx_ipc_token_file(no_hgx_env, alice, monkeypatch):
    copy = no_hgx_env / "somewhere" / "token.hex"
    copy.parent.mkdir()
    copy.write_text((alice.home / "ipc.token").read_text())
    monkeypatch.setenv("HGX_IPC_TOKEN_FILE", str(copy))
    link = hgx.HGXLink(alice.ipc_port, timeout=10)
    try:
        assert link.whoami.as_str() == alice.fingerprint
    finally:
        link.stop_threadsafe()


def test_a_missing_token_raises_at_once_naming_the_paths(no_hgx_env, alice):
    started = time.monotonic()
    with pytest.raises(exceptions.IPCTokenNotFound) as info:
        hgx.HGXLink(alice.ipc_port, connect_timeout=30)
    assert time.monotonic() - started < 1.0, "no waiting for a file that is not there"
    err = info.value
    assert isinstance(err, hgx.HGXLinkError) and isinstance(err, FileNotFoundError)
    assert err.tried == ipc_token_search_paths()
    for path in err.tried:
        assert path in str(err)


def test_nothing_listening_fails_within_connect_timeout(alice):
    from harness import free_port

    assert DEFAULT_CONNECT_TIMEOUT == 3.0
    assert inspect.signature(hgx.HGXLink).parameters["connect_timeout"].default == 3.0
    port = free_port()
    started = time.monotonic()
    with pytest.raises(hgx.HGXLinkError) as info:
        # The default connect_timeout, and a real token: only the port is wrong.
        hgx.HGXLink(port, home=alice.home)
    elapsed = time.monotonic() - started
    assert DEFAULT_CONNECT_TIMEOUT - 0.5 < elapsed < DEFAULT_CONNECT_TIMEOUT + 2, elapsed
    assert "127.0.0.1:%d" % port in str(info.value)
    assert "refused" in str(info.value).lower() or "Refused" in str(info.value)


def test_the_state_of_a_dead_object_raises_dead_object(alink):
    obj = alink.new_threadsafe(hgx.Obj, b"soon discarded")
    assert obj.state == b"soon discarded"
    obj.discard_threadsafe()
    with pytest.raises(exceptions.DeadObject):
        obj.state
    with pytest.raises(exceptions.DeadObject):
        obj.state = b"too late"
    gone = alink.new_threadsafe(hgx.JsonProxy, {"k": 1})
    gone.hgx_delete_threadsafe()
    with pytest.raises(exceptions.DeadObject):
        gone.hgx_state
    with pytest.raises(exceptions.DeadObject):
        gone.keys()  # pass-through to the wrapped value
    # The metadata stays readable.
    assert not obj.isalive and obj.ghid is not None


def test_package_metadata():
    assert hgx.__version__ == metadata.version("hgx")
    assert (Path(hgx.__file__).parent / "py.typed").is_file()
    requires = metadata.requires("hgx")
    assert any(r.replace(" ", "").startswith("websockets>=14") for r in requires), requires
    major = int(websockets.__version__.split(".")[0])
    assert major >= 14, websockets.__version__
    # The public API is annotated.
    for fn in (hgx.HGXLink.__init__, hgx.HGXLink.new, hgx.HGXLink.get,
               hgx.HGXLink.register_share_handler, hgx.link.find_ipc_token_file):
        hints = inspect.signature(fn)
        assert hints.return_annotation is not inspect.Signature.empty, fn
        for name, p in hints.parameters.items():
            if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                assert p.annotation is not inspect.Parameter.empty, (fn, name)
