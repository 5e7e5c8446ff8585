"""mkdocs hook: the repository's results/ published in the site, so that docs pages link to it as ../results/...

A docs page links to a result by the path that is right in the repository (docs/results.md ->
../results/standard/cartpole-v1.png), which GitHub's file view follows. mkdocs knows only the files under docs/, so
that link would be "not found" (an error under --strict) and the image would be missing from the site. This hook adds
every file under results/ (but results/runs/, the git-ignored run folders) to the build as if it lay at ../results/
beside docs/, written to <site>/repository/results/: the link validates, mkdocs rewrites it to the copy, and the
image shows. Markdown files among them become pages outside the nav, so a link to a report opens it rendered, and
their own links (a report's curves) are checked like any other.
"""

import os
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files, InclusionLevel

PUBLISHED = {"results": {"runs"}}  # folder beside docs/ -> its subfolders left out
SITE_FOLDER = "repository"  # where they are written in the site


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for folder, left_out in PUBLISHED.items():
        base = Path(os.path.normpath(os.path.join(config.docs_dir, os.pardir, folder)))
        for path in sorted(base.rglob("*")):
            parts = path.relative_to(base).parts
            if not path.is_file() or parts[0] in left_out or any(part.startswith(".") for part in parts):
                continue
            uri = "/".join((folder, *parts))
            placed = File(f"{SITE_FOLDER}/{uri}", None, config.site_dir, config.use_directory_urls)
            files.append(
                File(
                    f"../{uri}",  # the path a docs page links to; the source is docs_dir/../<uri>
                    config.docs_dir,
                    config.site_dir,
                    config.use_directory_urls,
                    dest_uri=placed.dest_uri,  # inside the site (a page as <name>/index.html)
                    inclusion=InclusionLevel.NOT_IN_NAV,
                )
            )
    return files
