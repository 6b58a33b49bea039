"""When the zygote may fork without os.fork: only when every at-fork hook of
the process was recorded, that is when nothing but the standard library (and
site's own finders) was imported before the recording started."""

from __future__ import annotations

from agentrt.zygote import _lean_possible


def test_the_standard_library_and_sites_finders_leave_the_lean_fork_possible() -> None:
    assert _lean_possible(["sys", "os", "encodings.utf_8", "__main__", "_distutils_hack"])
    assert _lean_possible(["__editable___agentrt_0_1_0_finder", "collections.abc"])


def test_a_module_a_pth_file_or_sitecustomize_imported_means_os_fork() -> None:
    # (such a module may have registered at-fork hooks nobody recorded)
    assert not _lean_possible(["os", "coverage"])
    assert not _lean_possible(["sitecustomize"])
