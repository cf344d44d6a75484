"""Write every dashboard to grafana/dashboards/<uid>.json (run from the repository's top)."""

from pathlib import Path

from grafana.kato_dashboards.dashboards import DASHBOARDS, encode, render

OUT = Path(__file__).resolve().parent.parent / "dashboards"

if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    for uid, make in DASHBOARDS.items():
        (OUT / f"{uid}.json").write_text(encode(render(make)))
        print(f"wrote {OUT / uid}.json")
