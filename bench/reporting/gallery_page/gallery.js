"use strict";
// editbench's gallery: draws the run's samples (the JSON in #gallery-data) as cards, a page at a
// time, filtered and sorted as the controls say. Every string from the run is set with
// textContent or as an attribute value, never parsed as markup.
(() => {
  const DATA = JSON.parse(document.getElementById("gallery-data").textContent);
  const INFINITE = { inf: Infinity, "-inf": -Infinity }; // JSON has no infinities: the data spells them
  for (const sample of DATA.samples)
    for (const cell of sample.cells.filter((c) => c)) cell.values = cell.values.map((v) => INFINITE[v] ?? v);
  const PAGE = 100; // cards drawn at a time; "show more" adds the next page
  const ANY = "";
  const controls = document.getElementById("controls");
  const cards = document.getElementById("cards");
  const more = document.getElementById("more");
  let shown = PAGE;

  function el(tag, attrs = {}, text) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function select(id, label, options) {
    const wrap = el("label", {}, label);
    const box = el("select", { id });
    for (const [value, text] of options) box.append(el("option", { value }, text));
    wrap.append(box);
    controls.append(wrap);
    box.addEventListener("change", () => {
      shown = PAGE;
      draw();
    });
    return box;
  }

  const arrow = (m) => (m.higher === null ? "" : m.higher ? " ↑" : " ↓");
  const rowOptions = DATA.rows.map((r, i) => [String(i), r.reference ? `${r.name} (reference)` : r.name]);
  const methods = [...new Set(DATA.rows.map((r) => r.method))];
  const method = select("filter-method", "method", [[ANY, "every method"], ...methods.map((m) => [m, m])]);
  const setting = select("filter-setting", "setting", [[ANY, "every setting"], ...rowOptions]);
  const editTypes = [...new Set(DATA.samples.map((s) => s.edit_type))].filter((t) => t).sort();
  const editType = editTypes.length
    ? select("filter-edit_type", "edit type", [[ANY, "every edit type"], ...editTypes.map((t) => [t, t])])
    : null;
  const groups = DATA.groups.map((key) => {
    const values = [...new Set(DATA.samples.map((s) => s.groups[key]).filter((v) => v !== undefined))].sort();
    return [key, select(`filter-group-${key}`, key, [[ANY, `every ${key}`], ...values.map((v) => [v, v])])];
  });
  const metricOptions = DATA.metrics.map((m, i) => [String(i), m.name + arrow(m)]);
  const metric = select("sort-metric", "sort by", [[ANY, "run order"], ...metricOptions]);
  const firstEdit = Math.max(0, DATA.rows.findIndex((r) => !r.reference));
  const sortRow = select("sort-row", "of the row", rowOptions);
  sortRow.value = String(firstEdit);
  const sortBy = select("sort-by", "using", [["value", "its value"], ["difference", "its difference to the baseline"]]);
  const order = select("sort-order", "order", [["asc", "ascending"], ["desc", "descending"]]);
  const baseline = select("baseline", "baseline", [[ANY, "none"], ...rowOptions]);

  // The setting list offers the chosen method's settings only.
  method.addEventListener("change", () => {
    for (const option of setting.options)
      option.hidden = option.value !== ANY && method.value !== ANY && DATA.rows[+option.value].method !== method.value;
    if (setting.selectedOptions[0].hidden) setting.value = ANY;
    draw();
  });

  // A new metric starts worst first: lowest first when higher is better, highest first otherwise.
  metric.addEventListener("change", () => {
    const m = DATA.metrics[+metric.value];
    order.value = m && m.higher === false ? "desc" : "asc";
    for (const option of order.options) {
      const worst = m && m.higher !== null && (option.value === "asc") === m.higher;
      option.textContent = (option.value === "asc" ? "ascending" : "descending") + (worst ? " (worst first)" : "");
    }
    draw();
  });
  more.addEventListener("click", () => {
    shown += PAGE;
    draw();
  });

  const visibleRows = () =>
    DATA.rows
      .map((r, i) => i)
      .filter((i) => method.value === ANY || DATA.rows[i].method === method.value)
      .filter((i) => setting.value === ANY || +setting.value === i);

  const matches = (s) =>
    (!editType || editType.value === ANY || s.edit_type === editType.value) &&
    groups.every(([key, box]) => box.value === ANY || s.groups[key] === box.value);

  function valueOf(sample, row, m) {
    const cell = row === null ? null : sample.cells[row];
    return cell && cell.status === "ok" ? cell.values[m] : null;
  }

  function sortKey(sample) {
    const m = +metric.value;
    const value = valueOf(sample, +sortRow.value, m);
    if (sortBy.value !== "difference") return value;
    const base = valueOf(sample, baseline.value === ANY ? null : +baseline.value, m);
    const diff = value === null || base === null ? null : value - base;
    return Number.isNaN(diff) ? null : diff; // inf - inf
  }

  function sorted(samples) {
    if (metric.value === ANY) return samples;
    const sign = order.value === "asc" ? 1 : -1;
    const keyed = samples.map((s) => [sortKey(s), s]);
    const compare = (a, b) => (a < b ? -1 : a > b ? 1 : 0);
    keyed.sort(([a], [b]) => (a === null ? (b === null ? 0 : 1) : b === null ? -1 : sign * compare(a, b))); // no value: last
    return keyed.map(([, s]) => s);
  }

  const format = (v) =>
    v === null || Number.isNaN(v) ? "—" : Number.isFinite(v) ? String(+v.toPrecision(4)) : v > 0 ? "inf" : "-inf";

  function metricTable(sample, row, base) {
    const table = el("table");
    DATA.metrics.forEach((m, i) => {
      const value = valueOf(sample, row, i);
      const tr = el("tr");
      tr.append(el("td", {}, m.name + arrow(m)), el("td", { "data-metric": m.name }, format(value)));
      const reference = base === null || base === row ? null : valueOf(sample, base, i);
      const diff = value === null || reference === null ? NaN : value - reference;
      if (!Number.isNaN(diff)) {
        const good = m.higher === null || diff === 0 ? "" : (diff > 0) === m.higher ? "better" : "worse";
        tr.append(el("td", { class: good, "data-diff": m.name }, `Δ ${diff >= 0 ? "+" : ""}${format(diff)}`));
      }
      table.append(tr);
    });
    return table;
  }

  function picture(src, alt, note) {
    if (src) return el("img", { src, alt, loading: "lazy", decoding: "async", width: 180, height: 180 });
    return el("div", { class: "missing" }, note);
  }

  function tile(sample, row, base) {
    const r = DATA.rows[row];
    const cell = sample.cells[row];
    const classes = ["tile"];
    if (metric.value !== ANY && row === +sortRow.value) classes.push("sorted");
    if (row === base) classes.push("baseline");
    const node = el("div", { class: classes.join(" "), "data-row": r.name, "data-method": r.method });
    const note = !cell ? "not run" : cell.status !== "ok" ? `${cell.status}: ${cell.error}` : "output file missing";
    const label = r.name + (r.reference ? " (reference)" : "") + (row === base ? " — baseline" : "");
    node.append(picture(cell && cell.image, r.name, note), el("div", { class: "name" }, label));
    node.append(metricTable(sample, row, base));
    return node;
  }

  function card(sample, rows, base) {
    const node = el("section", { class: "card", "data-sample": sample.id, "data-edit-type": sample.edit_type });
    const where = [`${sample.id}, seed ${sample.seed}`, sample.edit_type && `edit type ${sample.edit_type}`];
    where.push(...Object.entries(sample.groups).map(([k, v]) => `${k} ${v}`));
    node.append(el("h2", {}, where.filter((w) => w).join("; ")));
    const prompts = el("dl", { class: "prompts" });
    for (const [name, text] of Object.entries(sample.prompts)) prompts.append(el("dt", {}, name), el("dd", {}, text));
    node.append(prompts);
    const tiles = el("div", { class: "tiles" });
    const source = el("div", { class: "tile", "data-row": "source" });
    source.append(picture(sample.source, "source", `source unavailable: ${sample.source_note}`));
    source.append(el("div", { class: "name" }, sample.mask ? "source (mask outlined)" : "source"));
    tiles.append(source);
    for (const more of sample.more_sources) {  // another backbone saw the source at another size
      const other = el("div", { class: "tile", "data-row": "source" });
      other.append(picture(more.source, "source", "source unavailable"));
      other.append(el("div", { class: "name" }, `source at ${more.backbone}'s size${sample.mask ? " (mask outlined)" : ""}`));
      tiles.append(other);
    }
    // the baseline's and the sorted row's edits stand beside the others even when filtered out
    const sortedRow = metric.value === ANY ? null : +sortRow.value;
    const extra = [base, sortedRow].filter((r, i, all) => r !== null && !rows.includes(r) && all.indexOf(r) === i);
    for (const row of [...extra, ...rows]) tiles.append(tile(sample, row, base));
    node.append(tiles);
    return node;
  }

  function draw() {
    const rows = visibleRows();
    const base = baseline.value === ANY ? null : +baseline.value;
    const found = sorted(DATA.samples.filter(matches));
    const page = found.slice(0, shown);
    cards.replaceChildren(...page.map((s) => card(s, rows, base)));
    const status = document.getElementById("status");
    status.textContent = `${found.length} of ${DATA.samples.length} (sample, seed) pairs match; showing ${page.length}.`;
    status.dataset.matching = found.length;
    more.hidden = found.length <= shown;
  }

  if (DATA.caveat) {
    const labels = document.getElementById("labels");
    labels.textContent = DATA.caveat;
    labels.hidden = false;
  }
  draw();
  performance.mark("gallery-drawn");
})();
