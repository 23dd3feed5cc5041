"""Platforms (``os/arch[/variant]``) as containerd's ``platforms`` package normalises them."""

from __future__ import annotations

import platform as _platform
from dataclasses import dataclass
from typing import Any

from engine import errdefs

_KNOWN_OS = {"aix", "android", "darwin", "dragonfly", "freebsd", "hurd", "illumos", "ios", "js", "linux",
             "nacl", "netbsd", "openbsd", "plan9", "solaris", "wasip1", "windows", "zos"}  # fmt: skip
_KNOWN_ARCH = {"386", "amd64", "amd64p32", "arm", "armbe", "arm64", "arm64be", "loong64", "mips", "mipsle",
               "mips64", "mips64le", "ppc", "ppc64", "ppc64le", "riscv", "riscv64", "s390", "s390x", "sparc",
               "sparc64", "wasm"}  # fmt: skip


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        out = f"{self.os}/{self.architecture}"
        return out + (f"/{self.variant}" if self.variant else "")

    def matches(self, other: dict[str, Any]) -> bool:
        """Does an OCI descriptor's ``platform`` fit (an absent variant fits any)?"""
        if str(other.get("os") or "") != self.os:
            return False
        arch, variant = normalize_arch(str(other.get("architecture") or ""), str(other.get("variant") or ""))
        if arch != self.architecture:
            return False
        return not variant or not self.variant or variant == self.variant


def normalize_arch(arch: str, variant: str) -> tuple[str, str]:
    arch = arch.lower()
    variant = variant.lower()
    if arch in ("i386",):
        return "386", ""
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if variant == "v1" else variant
    if arch in ("aarch64", "arm64"):
        return "arm64", "" if variant in ("8", "v8") else variant
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch == "arm":
        if variant in ("", "7"):
            return "arm", "v7"
        if variant in ("5", "6", "8"):
            return "arm", "v" + variant
    return arch, variant


def host() -> Platform:
    arch, variant = normalize_arch(_platform.machine(), "")
    if arch.startswith("armv7"):
        arch, variant = "arm", "v7"
    return Platform("linux", arch, variant)


def parse(specifier: str) -> Platform:
    """platforms.Parse for ``os``, ``arch``, ``os/arch`` and ``os/arch/variant``."""
    parts = specifier.split("/")
    bad = errdefs.InvalidParameter(
        f'"{specifier}": unknown operating system or architecture: invalid argument'
    )
    if any(not p for p in parts) or len(parts) > 3:
        raise errdefs.InvalidParameter(f'"{specifier}": invalid platform specifier: invalid argument')
    os_ = parts[0].lower()
    if len(parts) == 1:
        if os_ in _KNOWN_OS:
            return Platform(os_, host().architecture, host().variant)
        arch, variant = normalize_arch(os_, "")
        if arch in _KNOWN_ARCH:
            return Platform("linux", arch, variant)
        raise bad
    if os_ not in _KNOWN_OS:
        raise bad
    arch, variant = normalize_arch(parts[1], parts[2] if len(parts) == 3 else "")
    if arch not in _KNOWN_ARCH:
        raise bad
    return Platform(os_, arch, variant)
