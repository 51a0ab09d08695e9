"""A self-contained interactive SVG flame graph: hover for details, click to
zoom, search by regular expression. No external resources.

Drawn as an icicle (the root at the top, callees below it), so the widest
frames are on the first screen however deep the narrow stacks go; stacks
deeper than --depth keep their outermost and innermost frames around one
marked frame that stands for the elided middle."""

from __future__ import annotations

import zlib
from xml.sax.saxutils import escape, quoteattr

from .dumpfile import shown
from .profile import amount

WIDTH = 1200
PAD = 10
ROW = 17
TOP = 66
BOTTOM = 10
# Frames narrower than this share of the whole are left out: invisible even
# at full width, and they would make the file huge for big profiles.
MIN_SHARE = 1.0 / 50000
DEFAULT_DEPTH = 40  # rows of frames: about one screen


class Node:
    def __init__(self, name: str) -> None:
        self.name = name
        self.value = 0
        self.children: dict[str, Node] = {}


def elided(path: tuple[str, ...], depth: int) -> tuple[str, ...]:
    """`path` (root first) with at most `depth` frames: its outer and inner
    ends, and one frame saying that the middle was left out."""
    if len(path) <= depth:
        return path
    head = (depth - 1) // 2
    tail = depth - 1 - head
    marker = f"[{len(path) - head - tail} frames elided by --depth {depth}]"
    return (*path[:head], marker, *path[len(path) - tail :])


def tree(stacks: list[tuple[tuple[str, ...], int]], depth: int) -> Node:
    root = Node("all")
    for path, value in stacks:
        root.value += value
        node = root
        for name in elided(path, depth):
            node = node.children.setdefault(name, Node(name))
            node.value += value
    return root


def color(name: str) -> str:
    if name.startswith("[") and "elided by --depth" in name:
        return "hsl(0,0%,80%)"
    h = zlib.crc32(name.encode("utf-8", "surrogateescape"))
    if name.endswith("_[j]"):  # Java frames: greens, as flamegraph.pl's java palette
        return f"hsl({100 + h % 40},{50 + (h >> 8) % 25}%,{45 + (h >> 16) % 15}%)"
    h = zlib.crc32(name.encode("utf-8", "surrogateescape"))
    return f"hsl({h % 55},{70 + (h >> 8) % 25}%,{55 + (h >> 16) % 15}%)"


def render_svg(stacks: list[tuple[tuple[str, ...], int]], title: str, unit: str, depth: int | None = None) -> str:
    root = tree(stacks, depth or DEFAULT_DEPTH)
    total = max(root.value, 1)
    frames: list[str] = []
    depth_max = 0
    # Depth first without recursion: a hostile dump may hold any depth.
    todo: list[tuple[Node, float, int]] = [(root, 0.0, 0)]
    while todo:
        node, x, level = todo.pop()
        share = node.value / total
        if share < MIN_SHARE:
            continue
        depth_max = max(depth_max, level)
        name = shown(node.name)
        shown_amount = amount(node.value, unit) + ("" if unit == "bytes" else " objects")
        label = f"{name} ({shown_amount}, {100 * share:.2f}%)"
        frames.append(
            f'<g class="f" data-name={quoteattr(name)} data-value="{node.value}" '
            f'data-x="{x:.8f}" data-w="{share:.8f}" data-depth="{level}">'
            f"<title>{escape(label)}</title>"
            f'<rect height="{ROW - 1}" rx="2" fill="{color(node.name)}"/><text></text></g>'
        )
        offset = x
        children = []
        for child in sorted(node.children.values(), key=lambda c: c.name):
            children.append((child, offset, level + 1))
            offset += child.value / total
        todo.extend(reversed(children))
    height = TOP + (depth_max + 1) * ROW + BOTTOM
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}"
 data-total="{root.value}" data-unit="{unit}" data-rows="{ROW}" data-top="{TOP}">
<style>
text {{ font: 12px Verdana, sans-serif; fill: #000; }}
.f text {{ pointer-events: none; }}
.f:hover rect {{ stroke: #000; stroke-width: 0.5; }}
.button {{ cursor: pointer; fill: #004a9f; }}
</style>
<rect width="100%" height="100%" fill="#f8f8f0"/>
<text x="{WIDTH // 2}" y="22" text-anchor="middle" style="font-size: 16px">{escape(shown(title))}</text>
<text id="reset" class="button" x="{PAD}" y="42" visibility="hidden">Reset zoom</text>
<text id="search" class="button" x="{WIDTH - PAD}" y="42" text-anchor="end">Search</text>
<text id="matched" x="{WIDTH - PAD}" y="{TOP - 8}" text-anchor="end"></text>
<text id="details" x="{PAD}" y="{TOP - 8}"> </text>
<g id="frames">
{chr(10).join(frames)}
</g>
<script type="text/ecmascript"><![CDATA[
{SCRIPT}
]]></script>
</svg>
"""


SCRIPT = r"""
(function () {
  var svg = document.documentElement;
  window.onerror = function (msg) { svg.setAttribute("data-error", String(msg)); };
  var width = svg.width.baseVal.value, pad = 10, row = +svg.getAttribute("data-rows");
  var top = +svg.getAttribute("data-top"), unit = svg.getAttribute("data-unit");
  var total = +svg.getAttribute("data-total");
  var frames = Array.prototype.slice.call(document.querySelectorAll("g.f"));
  var details = document.getElementById("details"), reset = document.getElementById("reset");
  var zoomX = 0, zoomW = 1;

  function human(v) {
    if (unit !== "bytes") return v.toLocaleString() + " objects";
    var units = [["GiB", 1 << 30], ["MiB", 1 << 20], ["KiB", 1 << 10]];
    for (var i = 0; i < units.length; i++) if (v >= units[i][1]) return (v / units[i][1]).toFixed(2) + " " + units[i][0];
    return v + " B";
  }

  function draw() {
    var span = width - 2 * pad;
    frames.forEach(function (g) {
      var x = (+g.getAttribute("data-x") - zoomX) / zoomW, w = +g.getAttribute("data-w") / zoomW;
      var px = pad + x * span, pw = w * span;
      if (x + w <= 1e-9 || x >= 1 - 1e-9 || pw < 0.5) { g.style.display = "none"; return; }
      g.style.display = "";
      var y = top + +g.getAttribute("data-depth") * row;
      var rect = g.querySelector("rect"), text = g.querySelector("text");
      rect.setAttribute("x", px.toFixed(2)); rect.setAttribute("y", y);
      rect.setAttribute("width", Math.max(pw - 0.5, 0.1).toFixed(2));
      text.setAttribute("x", (px + 3).toFixed(2)); text.setAttribute("y", y + row - 5);
      var name = g.getAttribute("data-name"), fit = Math.floor((pw - 6) / 7);
      text.textContent = fit < 3 ? "" : (name.length <= fit ? name : name.slice(0, fit - 2) + "..");
    });
    reset.setAttribute("visibility", zoomW < 1 ? "visible" : "hidden");
  }

  frames.forEach(function (g) {
    g.addEventListener("mouseover", function () {
      var v = +g.getAttribute("data-value");
      details.textContent = g.getAttribute("data-name") + ": " + human(v) + " (" + (100 * v / total).toFixed(2) + "%)";
    });
    g.addEventListener("mouseout", function () { details.textContent = " "; });
    g.addEventListener("click", function () {
      zoomX = +g.getAttribute("data-x"); zoomW = Math.max(+g.getAttribute("data-w"), 1e-12); draw();
    });
  });
  reset.addEventListener("click", function () { zoomX = 0; zoomW = 1; draw(); });

  document.getElementById("search").addEventListener("click", function () {
    var term = window.prompt("Search (regular expression)", "");
    var matched = document.getElementById("matched");
    if (term === null) return;
    var re;
    try { re = new RegExp(term); } catch (e) { matched.textContent = "bad expression"; return; }
    var spans = [];
    frames.forEach(function (g) {
      var hit = term !== "" && re.test(g.getAttribute("data-name"));
      g.querySelector("rect").style.fill = hit ? "rgb(230,0,230)" : "";
      if (hit) spans.push([+g.getAttribute("data-x"), +g.getAttribute("data-w")]);
    });
    // Matched share: union of the matching frames' spans, so nested matches count once.
    spans.sort(function (a, b) { return a[0] - b[0]; });
    var sum = 0, end = -1;
    spans.forEach(function (s) {
      var lo = Math.max(s[0], end), hi = s[0] + s[1];
      if (hi > lo) { sum += hi - lo; end = hi; }
    });
    matched.textContent = term === "" ? "" : "Matched: " + (100 * sum).toFixed(2) + "%";
  });

  draw();
  svg.setAttribute("data-ready", "1");
})();
"""
