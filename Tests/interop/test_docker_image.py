"""The Docker image carries what reeld needs (issue 15). No Docker engine runs here, so the
Dockerfile is read, not built, and held against this machine, which is Debian 12 like the image:

- every shared library the built reeld (REEL_BIN_DIR) loads, per `ldd`, is owned (`dpkg -S`) by
  a package the runtime stage installs, pulls in through Depends, or has in its base image; the
  libraries reeld links itself (with the Swift runtime's, which `--static-swift-stdlib` folds
  into it) come from packages the runtime stage names, or from the base image;
- ffmpeg is there: post-processing runs ffmpeg and ffprobe, the simulated provider's media ffmpeg;
- the build stage's -dev packages are the ones scripts/install-deps installs for building, and
  each one's runtime twin (libpq-dev → libpq5) is in the runtime stage;
- the resource bundles next to reeld (Reel_ReelWeb.resources: the dashboard's files) land next
  to it in the image, where Bundle.module looks.

Each check turns the Dockerfile's text into a list of problems, and the last test shows each
one failing on a broken copy. By hand, with ffmpeg taken out of the runtime stage:

    sed -i 's/ ffmpeg / /' Dockerfile
    REEL_BIN_DIR=$(swift build --show-bin-path) python3 -m pytest -q Tests/interop/test_docker_image.py
    # FAILED test_runtime_stage_installs_ffmpeg: the runtime stage doesn't install ffmpeg
    #   (reeld runs /usr/bin/ffmpeg, from Debian's ffmpeg) ...
    git checkout Dockerfile
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import reel_interop as ri

DOCKERFILE = ri.REPO_ROOT / "Dockerfile"
INSTALL_DEPS = ri.REPO_ROOT / "scripts" / "install-deps"
# The programs reeld starts: PostProcessor's ffmpeg and ffprobe, MediaRoute's ffmpeg.
TOOLS = ("ffmpeg", "ffprobe")


# --------------------------------------------------------------------------- the Dockerfile


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def runs(self) -> list[list[str]]:
        """Each shell command of the stage's RUN lines, split into words."""
        out = []
        for keyword, args in self.instructions:
            if keyword == "RUN":
                out += [shlex.split(c) for c in re.split(r"&&|\|\||;", args) if c.strip()]
        return out

    def apt_packages(self) -> set[str]:
        out = set()
        for words in self.runs():
            if words[:1] == ["apt-get"] and "install" in words:
                out |= {w for w in words[words.index("install") + 1:] if not w.startswith("-")}
        return out


def stages(text: str) -> list[Stage]:
    """The stages and their instructions: continuation lines joined, comments dropped."""
    out: list[Stage] = []
    pending = ""
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("#") or not s:
            continue
        if s.endswith("\\"):
            pending += s[:-1] + " "
            continue
        keyword, _, args = (pending + s).partition(" ")
        pending = ""
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            m = re.match(r"(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?$", args, re.I)
            out.append(Stage(m.group(1), m.group(2)))
        elif out:
            out[-1].instructions.append((keyword, args))
    return out


def build_stage(text: str) -> Stage:
    return next(s for s in stages(text) if s.name == "build")


def runtime_stage(text: str) -> Stage:
    return stages(text)[-1]


def install_deps_packages() -> set[str]:
    text = INSTALL_DEPS.read_text()
    m = re.search(r"^APT_PACKAGES=\((.*?)^\)", text, re.M | re.S)
    assert m, "scripts/install-deps has no APT_PACKAGES=( ... ) list"
    return set(re.findall(r"^\s*([a-z0-9][a-z0-9.+-]*)\s*(?:#.*)?$", m.group(1), re.M))


# --------------------------------------------------------------------------- this machine


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def _name(dep: str) -> str:
    """`libssl3 (>= 3.0.0)` or `python3:any` → the package name."""
    return dep.strip().split()[0].split(":")[0]


class Machine:
    """What the built reeld loads and what Debian's packages on this machine say about it."""

    def __init__(self, bin_dir: Path):
        self.bin_dir = bin_dir
        reeld = bin_dir / "reeld"
        for tool in ("ldd", "readelf", "dpkg", "dpkg-query"):
            if not shutil.which(tool):
                pytest.fail(f"{tool} is missing (binutils, dpkg): this test reads reeld's ELF and "
                            "Debian's package database", pytrace=False)
        # soname → path, for every library the loader maps into reeld.
        ldd = _run("ldd", str(reeld))
        assert ldd.returncode == 0, ldd.stderr
        self.loaded = dict(re.findall(r"^\s*(\S+) => (/\S+)", ldd.stdout, re.M))
        self.loaded.update({Path(p).name: p for p in re.findall(r"^\s*(/\S+) \(0x", ldd.stdout, re.M)})
        self.owner = self._owners(self.loaded.values())
        # The Swift runtime's libraries: no package owns them, the image links them in statically.
        self.swift_runtime = {so for so, path in self.loaded.items()
                              if path not in self.owner and "/swift/" in path}
        # The libraries reeld links itself: its NEEDED entries, and those of the Swift runtime
        # libraries, which become reeld's own once they are linked in statically.
        self.linked, todo, seen = set(), [str(reeld)], set()
        while todo:
            path = todo.pop()
            if path in seen:
                continue
            seen.add(path)
            for so in self._needed(path):
                if so in self.swift_runtime:
                    todo.append(self.loaded[so])
                elif so in self.loaded:
                    self.linked.add(so)
        self._read_packages()

    @staticmethod
    def _needed(path: str) -> list[str]:
        r = _run("readelf", "-d", path)
        assert r.returncode == 0, r.stderr
        return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", r.stdout)

    @staticmethod
    def _owners(paths) -> dict[str, str]:
        """path → the package that ships it. With merged /usr a file is registered under one of
        /lib and /usr/lib, and the loader may name it by the other, or by a symlink."""
        aliases: dict[str, str] = {}
        for p in paths:
            for q in (p, os.path.realpath(p)):
                for alias in (q, q[4:] if q.startswith("/usr/") else "/usr" + q):
                    aliases.setdefault(alias, p)
        r = _run("dpkg", "-S", *aliases)  # "libc6:amd64: /lib/x86_64-linux-gnu/libc.so.6"
        owner = {}
        for line in r.stdout.splitlines():
            pkgs, _, path = line.rpartition(": ")
            if path in aliases and not line.startswith("diversion"):
                owner.setdefault(aliases[path], _name(pkgs.split(",")[0]))
        return owner

    def _read_packages(self):
        fmt = "${db:Status-Abbrev}\t${Package}\t${Essential}\t${Priority}\t${Source}\t${Provides}\t${Pre-Depends}\t${Depends}\n"
        r = _run("dpkg-query", "-W", "-f", fmt)
        self.depends: dict[str, list[list[str]]] = {}
        self.source: dict[str, str] = {}
        provided: dict[str, list[str]] = {}
        roots = {"apt"}
        for line in r.stdout.splitlines():
            status, pkg, essential, priority, source, provides, pre, deps = line.split("\t")
            if not status.startswith("ii"):
                continue
            self.source[pkg] = _name(source) if source else pkg
            for virtual in filter(None, provides.split(",")):
                provided.setdefault(_name(virtual), []).append(pkg)
            groups = [g for g in f"{pre},{deps}".split(",") if g.strip()]
            self.depends[pkg] = [[_name(alt) for alt in g.split("|")] for g in groups]
            if essential == "yes" or priority == "required":
                roots.add(pkg)
        # Each group of alternatives as apt resolves it: the first one installed, or provided.
        def resolve(group: list[str]) -> list[str]:
            for alt in group:
                if alt in self.depends or alt in provided:
                    return [alt] if alt in self.depends else provided[alt][:1]
            return []
        self.depends = {pkg: [resolve(g) for g in groups] for pkg, groups in self.depends.items()}
        # debian:bookworm-slim is Debian's minimal base: the Essential and required packages, and apt.
        self.base = self.closure(roots)

    def closure(self, packages) -> set[str]:
        out, todo = set(), list(packages)
        while todo:
            pkg = todo.pop()
            if pkg in out:
                continue
            out.add(pkg)
            for group in self.depends.get(pkg, []):
                todo += group
        return out

    def runtime_twins(self, dev: str) -> set[str]:
        """The library packages a -dev package depends on from its own source package."""
        return {d for g in self.depends.get(dev, []) for d in g
                if self.source.get(d) == self.source.get(dev) and not d.endswith("-dev")}


@pytest.fixture(scope="module")
def machine(bin_dir) -> Machine:
    return Machine(Path(bin_dir))


# --------------------------------------------------------------------------- the checks


def runtime_library_problems(text: str, m: Machine) -> list[str]:
    named = runtime_stage(text).apt_packages()
    image = m.closure(named | m.base)
    problems = []
    builds = [w for w in build_stage(text).runs() if w[:2] == ["swift", "build"] and "--show-bin-path" not in w]
    if not builds or any("--static-swift-stdlib" not in w for w in builds):
        problems.append("no Debian package ships the Swift runtime (libswiftCore.so, libFoundation.so …): "
                        "the build stage must link it into reeld with swift build --static-swift-stdlib")
    for so, path in sorted(m.loaded.items()):
        pkg = m.owner.get(path)
        if so in m.swift_runtime:
            continue
        if pkg is None:
            problems.append(f"reeld loads {path}, which no Debian package ships")
        elif pkg not in image:
            problems.append(f"reeld loads {so} ({path}, from {pkg}), which the runtime stage neither "
                            "installs nor pulls in")
        elif so in m.linked and pkg not in named and pkg not in m.base:
            problems.append(f"reeld links {so} ({pkg}), which the runtime stage gets only by chance "
                            f"(another package's Depends): name {pkg} in its apt-get install")
    return problems


def ffmpeg_problems(text: str, m: Machine) -> list[str]:
    named = runtime_stage(text).apt_packages()
    problems = []
    for tool in TOOLS:
        path = shutil.which(tool)
        if not path:
            pytest.fail(f"{tool} is not installed here: run scripts/install-deps (apt: ffmpeg)", pytrace=False)
        pkg = m._owners([path]).get(path)
        assert pkg, f"no package ships {path}"
        if pkg not in named:
            problems.append(f"the runtime stage doesn't install {pkg} (reeld runs {path}, from Debian's {pkg})")
    return problems


def build_package_problems(text: str, m: Machine) -> list[str]:
    build, runtime = build_stage(text).apt_packages(), runtime_stage(text).apt_packages()
    wanted = install_deps_packages()
    problems = []
    dev, wanted_dev = {p for p in build if p.endswith("-dev")}, {p for p in wanted if p.endswith("-dev")}
    if missing := wanted_dev - dev:
        problems.append(f"the build stage lacks -dev packages scripts/install-deps builds with: {sorted(missing)}")
    if extra := build - wanted:
        problems.append(f"the build stage installs packages scripts/install-deps doesn't: {sorted(extra)}")
    for pkg in sorted(dev):
        twins = m.runtime_twins(pkg)
        if not twins:
            problems.append(f"{pkg} is not installed here, so its runtime twin is unknown: run scripts/install-deps")
        elif not twins & runtime:
            problems.append(f"the build stage links against {pkg} but the runtime stage lacks {' or '.join(sorted(twins))}")
    return problems


def resource_bundle_problems(text: str, m: Machine) -> list[str]:
    """Each resource bundle next to reeld in the bin directory is copied next to reeld in the
    build stage's output, and the runtime stage copies that output beside its ENTRYPOINT."""
    bundles = sorted(p.name for p in m.bin_dir.glob("*.resources"))
    copies: dict[str, list[str]] = {}  # destination → sources, from the build stage's cp commands
    for words in build_stage(text).runs():
        if words[:1] == ["cp"]:
            args = [w for w in words[1:] if not w.startswith("-")]
            copies.setdefault(args[-1].rstrip("/"), []).extend(os.path.basename(a) for a in args[:-1])
    runtime = runtime_stage(text)
    entry = next((a for k, a in runtime.instructions if k == "ENTRYPOINT"), "")
    m_entry = re.match(r'\["([^"]+)/reeld"', entry)
    if not m_entry:
        return [f"the runtime stage's ENTRYPOINT is not reeld: {entry!r}"]
    shipped = {re.sub(r"^--from=build\s+", "", a).split()[0].rstrip("/")
               for k, a in runtime.instructions if k == "COPY" and a.startswith("--from=build")
               and a.split()[-1].rstrip("/") == m_entry.group(1)}
    problems = []
    for out in shipped or {"?"}:
        have = copies.get(out, [])
        if "reeld" not in have:
            problems.append(f"the build stage doesn't put reeld in {out}, which the runtime stage ships")
        for bundle in bundles:
            if not any(fnmatch.fnmatch(bundle, src) for src in have):
                problems.append(f"{bundle} (next to reeld in {m.bin_dir}) is not copied into {out} with reeld, "
                                f"so the image's reeld lacks it")
    return problems


# --------------------------------------------------------------------------- the tests


def test_every_library_reeld_loads_is_in_the_runtime_stage(machine):
    assert machine.linked, "readelf found no libraries reeld links"
    for so in ("libnghttp2.so.14", "libpq.so.5", "libcurl.so.4", "libprotobuf-c.so.1", "libssl.so.3"):
        assert so in machine.linked, f"reeld does not link {so}? {sorted(machine.linked)}"
    problems = runtime_library_problems(DOCKERFILE.read_text(), machine)
    assert not problems, "\n".join(problems)


def test_runtime_stage_installs_ffmpeg(machine):
    problems = ffmpeg_problems(DOCKERFILE.read_text(), machine)
    assert not problems, "\n".join(problems)


def test_build_stage_dev_packages_are_install_deps_ones(machine):
    problems = build_package_problems(DOCKERFILE.read_text(), machine)
    assert not problems, "\n".join(problems)


def test_resource_bundles_ship_next_to_reeld(machine):
    assert (machine.bin_dir / "Reel_ReelWeb.resources").is_dir(), (
        f"no Reel_ReelWeb.resources in {machine.bin_dir}: the dashboard's files ship as one")
    problems = resource_bundle_problems(DOCKERFILE.read_text(), machine)
    assert not problems, "\n".join(problems)


BROKEN = [  # (what, old text, new text): each copy of the Dockerfile must fail its check
    ("no ffmpeg", " ffmpeg ", " ", ffmpeg_problems),
    ("no libpq5", " libpq5 ", " ", runtime_library_problems),
    ("libssl3 only through libpq5's Depends", " libssl3 ", " ", runtime_library_problems),
    ("a dynamic Swift runtime", "swift build -c release --static-swift-stdlib \\",
     "swift build -c release \\", runtime_library_problems),
    ("no libnghttp2-dev", "libnghttp2-dev ", "", build_package_problems),
    ("an extra -dev package", "libnghttp2-dev ", "libnghttp2-dev libxml2-dev ", build_package_problems),
    ("no runtime twin of libprotobuf-c-dev", " libprotobuf-c1 ", " ", build_package_problems),
    ("resource bundles left behind", ' \\\n && cp -R "$bin"/*.resources /out/', "", resource_bundle_problems),
    ("binaries shipped elsewhere", "COPY --from=build /out/ /usr/local/bin/", "COPY --from=build /out/ /opt/reel/",
     resource_bundle_problems),
]


@pytest.mark.parametrize("what,old,new,check", BROKEN, ids=[b[0] for b in BROKEN])
def test_checks_fail_on_a_broken_dockerfile(machine, what, old, new, check):
    text = DOCKERFILE.read_text()
    assert old in text, f"{what}: {old!r} is not in the Dockerfile any more"
    assert not check(text, machine)
    assert check(text.replace(old, new), machine), f"{check.__name__} does not notice {what}"
