"""Which inputs a resumed job has done: identity by content, never by name.

    from worldloom.datasets.sources import ResumeIndex, file_source
    index = ResumeIndex.of("data/pseudo")                       # the sources of its committed episodes
    decision = index.decide(file_source("videos/a/clip.mp4", root="videos"))
    decision.done, decision.name, decision.replaces             # skip it? name its episodes? replace which?

An input (a video file, or an episode of another dataset) is done only if the same content was
committed whole: for a file, the same path with the same size, modification time and change time (decided
without reading it, as git's index decides), or else the same blake2b hash of its bytes (a file moved or copied since);
for a dataset episode, the same shard checksum and rows (a hash found under another path counts only for a path
the dataset does not know: a known file replaced by a copy of another input is done again). Two inputs with the same name in
different folders or runs are distinct: the second gets a name with its hash (`clip.mp4~1a2b3c4d`).
An input at a known path whose size, mtime or hash changed is done again under its old name, and
its new episodes replace the old ones in one commit (`commit_shards(..., replace=ids)`): the
dataset never holds both, nor neither. An input is done only while the shards of its episodes are whole: one
missing or of another size than dataset.json says (a copy cut short) is a one-line error pointing to
`worldloom dataset repair`, never "already there".

Every episode written from an input records it in `env_config["source_identity"]` (`origin`: the
file's absolute path or `<dataset>#<episode>`; `name`; `key`: `blake2b-128:<hex>` or
`shard:<checksum>:<row>:<steps>`; `relpath`, `size_bytes`, `mtime_ns`, `ctime_ns` for files). The
change time is what no copy tool sets: a file replaced by one of the same size whose modification time
was kept (`cp -p`, `rsync -t`, an archive's stored times, `touch -r`) is hashed, not taken as unchanged. Capture needs
none of this: its episodes are pure functions of their spec, the dataset's config must equal the
job's (`capture.driver.prepare_target`), so an episode id names one content for good.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from worldloom.errors import UserError
from worldloom.paths import child, redact_text, shell_word

from . import storage
from .repair import damaged_shards
from .writer import _committed_episodes, commit_shards

HASH_PREFIX = "blake2b-128:"
SEGMENT = re.compile(r":\d{4}$")  # video episodes are <name>:0000, <name>:0001, ...


def file_hash(path: str | os.PathLike) -> str:
    """'blake2b-128:<hex>' of a file's bytes (the checksum kind of dataset shards)."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            digest.update(chunk)
    return HASH_PREFIX + digest.hexdigest()


@dataclass
class Source:
    """One input of a job: where it is, what it is called, and (lazily) what it holds."""

    origin: str  # absolute path of a file, or "<dataset>#<episode id>"
    name: str  # the episode name it gets unless that is taken by another input
    key: str | None = None  # content key; for files computed on first use (reads the file)
    relpath: str | None = None
    size_bytes: int | None = None
    mtime_ns: int | None = None
    ctime_ns: int | None = None  # the inode's change time: set by the kernel on every write or replacement
    made_by: str | None = None  # how this job makes its episodes where that decides them (ingest: `conversion`)

    def content_key(self) -> str:
        if self.key is None:
            self.key = file_hash(self.origin)
        return self.key

    def identity(self, name: str) -> dict:
        """The record written into each episode's env_config["source_identity"]."""
        record = {"origin": self.origin, "name": name, "key": self.content_key()}
        if self.size_bytes is not None:
            record.update(relpath=self.relpath, size_bytes=self.size_bytes, mtime_ns=self.mtime_ns, ctime_ns=self.ctime_ns)
        return record


def file_source(path: str | os.PathLike, root: str | os.PathLike | None = None) -> Source:
    """A video file as a Source, named by its path relative to `root` (its own name without one)."""
    relpath = relative_name(path, root) if root is not None else Path(path).name
    path = Path(path).resolve()
    stat = path.stat()
    return Source(origin=str(path), name=relpath, relpath=relpath, size_bytes=stat.st_size, mtime_ns=stat.st_mtime_ns,
                  ctime_ns=stat.st_ctime_ns)


def relative_name(path: str | os.PathLike, root: str | os.PathLike) -> str:
    """`path` relative to `root`, as found under it (through a symlinked folder the name stays the one
    under root, not the link's target), else as both resolve, else the file's own name."""
    path, root = Path(path), Path(root)
    for a, b in ((Path(os.path.abspath(path)), Path(os.path.abspath(root))), (path.resolve(), root.resolve())):
        try:
            return a.relative_to(b).as_posix()
        except ValueError:
            continue
    return path.name


def episode_source(dataset_uri: str, episode_id: str, shard_checksum: str, row_start: int, num_steps: int) -> Source:
    """An episode of a WorldLoom dataset as a Source; its content is its shard's checksum and rows."""
    return Source(origin=f"{dataset_uri}#{episode_id}", name=episode_id,
                  key=f"shard:{shard_checksum}:{row_start}:{num_steps}")


@dataclass(frozen=True)
class Decision:
    done: bool
    name: str  # name for the input's episodes (video segments append :0000, :0001, ...)
    replaces: tuple[str, ...] = ()  # committed episode ids the new episodes replace
    reason: str = ""  # "unchanged", "same content as <origin>", "changed", "new"
    done_ids: tuple[str, ...] = ()  # done: the committed episodes that make it done (their shards must be whole)


@dataclass
class _Group:
    """The committed episodes made from one input."""

    name: str
    key: str | None
    size_bytes: int | None = None
    mtime_ns: int | None = None
    origin: str = ""
    ctime_ns: int | None = None
    episode_ids: list[str] = field(default_factory=list)
    made_by: str | None = None  # what made its episodes from it where that decides them: the labeling model
    truncated: bool = False  # kept partially (`--keep-truncated`): its input decoded short of its container's end
    stale: bool = False  # its input now holds other content (`ResumeIndex.forget_changed`): it makes nothing done


class ResumeIndex:
    """The inputs behind a dataset's committed episodes, by origin and by content key."""

    def __init__(self, groups: list[_Group], made_by: str | None = None, keep_truncated: bool = True) -> None:
        self.by_origin = {g.origin: g for g in groups if g.origin}
        # An input kept partially by a run with --keep-truncated is done only for a job that keeps truncated inputs:
        # one without the flag treats it as a run without the flag would (made again, or skipped as truncated).
        self.keep_truncated = keep_truncated
        self.names = {g.name for g in groups}
        # Done means made whole from the same content by the same maker: episodes another model labeled are
        # not this job's (a retrained IDM under the same run name, another --model), whatever their input.
        self.made_by = made_by
        self.by_key: dict[str, list[_Group]] = {}
        for g in groups:
            if g.key:
                self.by_key.setdefault(g.key, []).append(g)

    def _maker(self, source: Source) -> str | None:
        return source.made_by if source.made_by is not None else self.made_by

    def _counts(self, group: _Group, maker: str | None) -> bool:
        """Whether `group`'s episodes are what this job would make: the same maker, and whole unless truncated ones are kept."""
        return self._same_maker(group, maker) and (self.keep_truncated or not group.truncated)

    @staticmethod
    def _same_maker(group: _Group, maker: str | None) -> bool:
        return maker is None or group.made_by == maker

    @classmethod
    def of(cls, root: str | os.PathLike, made_by: str | None = None, keep_truncated: bool = True) -> ResumeIndex:
        """The index of the dataset at `root` (empty when there is none yet); `made_by`: the label_model this
        job writes (an input whose episodes another model labeled is not done); `keep_truncated` False: an input
        kept partially (env_config `truncated`) is not done."""
        loc = storage.resolve(root)
        manifest = storage.read_manifest(loc)
        if manifest is None:
            return cls([], made_by, keep_truncated)
        episodes = _committed_episodes(loc, manifest)
        columns = ["episode_id", "env_config"] + (["label_model"] if "label_model" in episodes.column_names else [])
        groups: dict[tuple, _Group] = {}
        for row in episodes.select(columns).to_pylist():
            env_config = json.loads(row["env_config"]) if row["env_config"] else {}
            group = _group_of(row["episode_id"], env_config)
            group.made_by = row.get("label_model") or conversion(env_config)
            found = groups.setdefault((group.origin, group.key, group.name, group.made_by), group)
            found.episode_ids.append(row["episode_id"])
            found.truncated = found.truncated or env_config.get("truncated") is True
        return cls(list(groups.values()), made_by, keep_truncated)

    def _unchanged(self, group: _Group | None, source: Source) -> bool:
        """Whether `source` is, by its size and times, the input `group`'s episodes were made from (no byte read)."""
        return (group is not None and source.size_bytes is not None
                and (group.size_bytes, group.mtime_ns, group.ctime_ns) == (source.size_bytes, source.mtime_ns, source.ctime_ns))

    def forget_changed(self, sources: list[Source]) -> None:
        """Before any `decide`: the committed episodes of each of this job's inputs whose content changed since are
        stale, and stop making anything done, whichever input is decided first (a file replaced by a copy of another
        input must not be done by its own old episodes, nor the other input by episodes about to be replaced). An
        input that cannot be read is left to `decide`, which reports it."""
        for source in sources:
            group = self.by_origin.get(source.origin)
            if group is None or self._unchanged(group, source):
                continue
            try:
                key = source.content_key()
            except OSError:
                continue
            if key != group.key:
                group.stale = True
                if group.key in self.by_key:
                    self.by_key[group.key] = [g for g in self.by_key[group.key] if g is not group]

    def decide(self, source: Source) -> Decision:
        """Done, or the name and replaced episodes of the input's new episodes; remembers the answer,
        so that a second input with the same content in the same job is done too."""
        maker = self._maker(source)
        same_place = self.by_origin.get(source.origin)
        if self._unchanged(same_place, source) and self._counts(same_place, maker):
            return Decision(True, same_place.name, reason="unchanged", done_ids=tuple(same_place.episode_ids))
        key = source.content_key()
        # A known path whose content is the same is the input of its own episodes (another input's whole ones do
        # not make its partial ones done); one whose content changed has stale episodes (`forget_changed`): where
        # another input's episodes hold its new content (a file replaced by a copy of another input) it is that
        # input's duplicate, made once, and its stale episodes leave. Until 2026-12-08 it was made again: twice.
        stale = same_place is not None and same_place.stale
        same = next((g for g in self.by_key.get(key, ()) if self._counts(g, maker) and not g.stale
                     and (same_place is None or stale or g.origin == source.origin)), None)
        if same is not None:
            return Decision(True, same.name, tuple(same_place.episode_ids) if stale else (),
                            reason=f"same content as {same.origin}", done_ids=tuple(same.episode_ids))
        if same_place is not None:
            if not self._same_maker(same_place, maker):
                why = f"made by {same_place.made_by}"
            else:  # the same content, kept partially by a run with --keep-truncated (this one keeps none): again
                why = "kept truncated" if same_place.truncated and same_place.key in (key, None) else "changed"
            decision = Decision(False, same_place.name, tuple(same_place.episode_ids), why)
        else:
            name = source.name if source.name not in self.names else f"{source.name}~{key.rsplit(':', 1)[-1][:8]}"
            decision = Decision(False, name, reason="new")
        group = _Group(decision.name, key, source.size_bytes, source.mtime_ns, source.origin, made_by=maker,
                       ctime_ns=source.ctime_ns)
        self.by_origin[source.origin] = group
        self.by_key[key] = [group]
        self.names.add(decision.name)
        return decision


def conversion(env_config: dict) -> str | None:
    """How an ingested episode was made from its input where a flag decides it, as `Source.made_by` says it:
    a VPT recording's recorder version (it sets the GUI mouse scaler); None for everything else."""
    if env_config.get("format") == "vpt":
        return f"recorder version {env_config.get('recorder_version') or 'unknown'}"
    return None


def _group_of(episode_id: str, env_config: dict) -> _Group:
    """The input of one committed episode, from its source_identity (or, for datasets labeled
    before identities were written, from its recorded source path: relabeled once, replacing)."""
    ident = env_config.get("source_identity")
    if ident:
        return _Group(ident["name"], ident.get("key"), ident.get("size_bytes"), ident.get("mtime_ns"), ident.get("origin", ""),
                      ctime_ns=ident.get("ctime_ns"))
    if isinstance(env_config.get("source"), str):
        return _Group(SEGMENT.sub("", episode_id), None, origin=str(Path(env_config["source"]).resolve()))
    if isinstance(env_config.get("idm_source"), dict):
        return _Group(episode_id, None, origin=f"{env_config['idm_source'].get('dataset')}#{episode_id}")
    return _Group(SEGMENT.sub("", episode_id), None)


def plan_resume(out: str | os.PathLike, found: list[tuple[dict, Source]], made_by: str | None = None,
                keep_truncated: bool = True) -> tuple[list[dict], int, list[dict], list[dict]]:
    """What a resumable job (ingest, label) still has to do in the dataset at `out`.

    found: (item, its Source) for every input; made_by: the label_model the job writes (label), None
    where the input alone decides; keep_truncated False (a job without --keep-truncated): an input kept
    partially by an earlier run with it is not done (reason "kept truncated"). Returns (the items to do,
    each with its episode `name`, `identity`, the episodes it `replaces`, why (`reason`) and its source
    `files`; how many are already done; a failure record for each input that could not be read; each
    input whose content another input of this job holds, {"input", "same_as"}: made once, and not "already
    there", which a new-user trial (session 57) read in a new --out with no word of which files).
    """
    index = ResumeIndex.of(out, made_by, keep_truncated)
    index.forget_changed([source for _, source in found])
    todo, failed, num_done, done_ids, duplicates = [], [], 0, set(), []
    for item, source in found:
        try:
            decision = index.decide(source)
        except OSError as err:
            failed.append({"item": item, "ok": False, "error": f"{item['source']}: cannot read it ({err.strerror or err})"})
            continue
        if decision.done and decision.reason.startswith("same content as ") and (decision.replaces or not decision.done_ids):
            # the same as an input of this job (nothing of it committed yet), or an input replaced by a copy of
            # another whose episodes are committed: its own stale ones leave (`retire_duplicates`)
            duplicates.append({"input": item["source"], "same_as": decision.reason.removeprefix("same content as "),
                               "replaces": list(decision.replaces)})
            done_ids.update(decision.done_ids)
            continue
        if decision.done:
            num_done += 1
            done_ids.update(decision.done_ids)
            continue
        todo.append({**item, "name": decision.name, "replaces": list(decision.replaces), "reason": decision.reason,
                     "identity": source.identity(decision.name), "files": list(getattr(source, "files", ()))})
    check_done_shards(out, done_ids)
    return todo, num_done, failed, duplicates


def retire_duplicates(out: str | os.PathLike, duplicates: list[dict]) -> list[dict]:
    """Take out of the dataset at `out` the stale episodes of each duplicate input that replaces some (`plan_resume`:
    a file replaced by a copy of another input); returns {"input", "episodes"} for each, as a job's "replaced"."""
    retired = []
    for duplicate in duplicates:
        if duplicate["replaces"]:
            commit_shards(out, [], replace=duplicate["replaces"])
            retired.append({"input": redact_text(duplicate["input"]), "episodes": duplicate["replaces"]})
    return retired


def say_duplicates(command: str, duplicates: list[dict]) -> None:
    """One line before the work naming the inputs whose content another input of the job holds (`plan_resume`)."""
    if duplicates:
        named = ", ".join(f"{d['input']} (as {d['same_as']})" for d in duplicates[:3])
        more = f" and {len(duplicates) - 3} more" if len(duplicates) > 3 else ""
        changed = sum(bool(d["replaces"]) for d in duplicates)
        before = (f"; {changed} of them held other content before, whose episodes leave the dataset" if changed else "")
        print(f"{command}: {len(duplicates)} input(s) hold the same content as another input and are made once: "
              f"{named}{more}{before}", file=sys.stderr)


def check_done_shards(out: str | os.PathLike, done_ids: set[str]) -> None:
    """UserError (one line) if a shard holding an episode that makes an input done is missing or has another size
    than dataset.json says (cheap: no byte is read): a shard cut short or lost since must not count as done."""
    bad = damaged_shards(out, done_ids) if done_ids else {}
    if bad:
        rel, problem = next(iter(bad.items()))
        more = f" (and {len(bad) - 1} more shard(s))" if len(bad) > 1 else ""
        raise UserError(f"{child(redact_text(str(out)), rel)}: {problem}{more}; its episodes count as done, so run "
                        f"`worldloom dataset repair {shell_word(out)}`, then this command again to make them again")


def say_kept_truncated(command: str, out: str, todo: list[dict]) -> None:
    """One line before the work for inputs an earlier run kept partially with --keep-truncated: this run, without
    the flag, reads them again as a run without it would (a file still cut short is skipped as truncated)."""
    kept = [item for item in todo if item["reason"] == "kept truncated"]
    if kept:
        print(f"{command}: {len(kept)} input(s) in {redact_text(out)} were kept truncated by a run with --keep-truncated "
              f"(e.g. {kept[0]['source']}): not done without the flag, so read again; one still cut short is skipped as "
              "truncated and its kept episodes stay as they are (pass --keep-truncated to count them as done)",
              file=sys.stderr)
