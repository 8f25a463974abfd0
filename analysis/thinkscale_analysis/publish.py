"""Writing the outputs so that a failed analysis changes nothing.

Everything is produced in a staging directory inside DIR first; only when all
of it exists are the files renamed into place, figures first and fits.csv
last, so a present fits.csv always belongs to a finished analysis."""
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

FIGURE_PREFIXES = ("axis_", "all_axes", "compute_matched")


def write_text(path, text):
    """Writes and fsyncs one text file."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


@contextmanager
def _staging(out_dir):
    """A scratch directory inside out_dir (same file system, so renames are
    atomic), removed with whatever is left in it."""
    staging = Path(tempfile.mkdtemp(prefix=".analysis-", dir=out_dir))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _install(staging, moves, removals=()):
    """Puts the staged files in place, all or nothing: moves are (staged
    file, destination) pairs, removals destinations to delete. A destination
    that exists and is not a file is refused before anything moves; a
    failure midway puts back every file already replaced or removed (kept
    in the staging directory meanwhile), so the earlier outputs stay a
    consistent set."""
    for _, dst in moves:
        if dst.exists() and not dst.is_file():
            raise OSError(f"{dst} exists and is not a file")
    saved_dir = staging / ".replaced"
    saved_dir.mkdir()
    done = []  # (destination, its earlier file in saved_dir, or None)
    try:
        for i, dst in enumerate(removals):
            saved = saved_dir / f"removed-{i}"
            os.replace(dst, saved)
            done.append((dst, saved))
        for i, (src, dst) in enumerate(moves):
            saved = None
            if dst.exists():
                saved = saved_dir / f"replaced-{i}"
                os.replace(dst, saved)
            done.append((dst, saved))
            os.replace(src, dst)
    except BaseException:
        for dst, saved in reversed(done):
            if saved is not None:
                os.replace(saved, dst)
            else:
                dst.unlink(missing_ok=True)
        raise


def publish_files(out_dir, names, write_into):
    """write_into(staging_dir) writes the files `names` there; once all exist
    they are renamed into out_dir in the given order (the last one is the
    marker of a finished set). On any exception nothing in out_dir changes."""
    out_dir = Path(out_dir)
    with _staging(out_dir) as staging:
        write_into(staging)
        for name in names:
            if not (staging / name).is_file():
                raise OSError(f"{name} was not produced")
        _install(staging, [(staging / name, out_dir / name) for name in names])
    return [out_dir / name for name in names]


def publish(out_dir, texts, render_figures):
    """texts: file name -> content, renamed into out_dir in the given order;
    render_figures(staging_dir) -> paths of the figures it wrote there.
    Figures of axes this analysis no longer has are removed. On any
    exception nothing in out_dir changes."""
    out_dir = Path(out_dir)
    with _staging(out_dir) as staging:
        (staging / "figures").mkdir()
        figures = [Path(p) for p in render_figures(staging / "figures")]
        for name, text in texts.items():
            write_text(staging / name, text)
        figure_dir = out_dir / "figures"
        figure_dir.mkdir(exist_ok=True)
        written = {p.name for p in figures}
        stale = [old for old in figure_dir.iterdir()
                 if old.name not in written and old.name.startswith(FIGURE_PREFIXES)
                 and old.suffix in (".png", ".pdf") and old.is_file()]
        moves = [(p, figure_dir / p.name) for p in figures]
        moves += [(staging / name, out_dir / name) for name in texts]
        _install(staging, moves, stale)
    return [out_dir / name for name in texts], [figure_dir / p.name for p in figures]
