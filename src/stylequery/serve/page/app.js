// stylequery page: pick a source, add changes (with autocomplete), search, click to refine.
// Plain DOM code, no dependencies; all text from the server or the user goes in via textContent.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { words: [], known: new Set(), steps: [], current: -1 };
// A step: { source: {id, caption, url} or {file, url, name}, changes: [[from, to]], text, result }

function el(tag, props = {}, children = []) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

function thumb(id, size = 256) {
  return `/api/items/${id}/image?size=${size}`;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function getJSON(url, options) {
  let response;
  try {
    response = await fetch(url, options);
  } catch (err) {
    throw new Error("the server cannot be reached");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

// ---- autocomplete -------------------------------------------------------------------------

function matches(prefix, preferred) {
  const p = prefix.trim().toLowerCase();
  if (!p) return preferred.slice(0, 8);
  const pool = [...new Set([...preferred, ...state.words])];
  const starts = pool.filter((w) => w.startsWith(p));
  const inside = pool.filter((w) => !w.startsWith(p) && w.includes(p));
  return [...starts, ...inside].filter((w) => w !== p).slice(0, 8);
}

function attachAutocomplete(input, preferred) {
  const list = el("ul", { className: "suggestions", hidden: true });
  input.after(list);
  let active = -1;
  const close = () => { list.hidden = true; active = -1; };
  const choose = (word) => { input.value = word; close(); };
  const render = () => {
    const words = matches(input.value, preferred());
    list.replaceChildren(...words.map((w, i) => {
      const li = el("li", { textContent: w, className: i === active ? "active" : "" });
      li.addEventListener("mousedown", (e) => { e.preventDefault(); choose(w); });
      return li;
    }));
    list.hidden = words.length === 0;
  };
  input.addEventListener("input", () => { active = -1; render(); });
  input.addEventListener("focus", render);
  input.addEventListener("blur", close);
  input.addEventListener("keydown", (e) => {
    const n = list.children.length;
    if (e.key === "ArrowDown" && n) { active = (active + 1) % n; render(); e.preventDefault(); }
    else if (e.key === "ArrowUp" && n) { active = (active + n - 1) % n; render(); e.preventDefault(); }
    else if (e.key === "Enter" && active >= 0 && !list.hidden) {
      choose(list.children[active].textContent); e.preventDefault();
    } else if (e.key === "Escape") close();
  });
}

// ---- changes ------------------------------------------------------------------------------

function sourceWords() {
  // The source caption's words that the model knows: the likely FROM words of a change.
  const step = state.steps[state.current];
  const words = step && step.source.caption ? step.source.caption.split(/\s+/) : [];
  return words.filter((w) => state.known.has(w));
}

function addChange(from = "", to = "") {
  const fromInput = el("input", { className: "from", value: from, placeholder: "from",
    autocomplete: "off" });
  const toInput = el("input", { className: "to", value: to, placeholder: "to", autocomplete: "off" });
  const remove = el("button", { type: "button", textContent: "×", title: "remove" });
  const row = el("div", { className: "change" }, [
    el("div", { className: "word-box" }, [fromInput]), "→",
    el("div", { className: "word-box" }, [toInput]), remove]);
  remove.addEventListener("click", () => row.remove());
  $("changes").append(row);
  attachAutocomplete(fromInput, sourceWords);
  attachAutocomplete(toInput, () => []);
  return row;
}

function readChanges() {
  return [...document.querySelectorAll("#changes .change")]
    .map((row) => [row.querySelector(".from").value.trim(), row.querySelector(".to").value.trim()])
    .filter(([from, to]) => from || to);
}

function setChanges(changes) {
  $("changes").replaceChildren();
  (changes.length ? changes : [["", ""]]).forEach(([from, to]) => addChange(from, to));
}

// ---- steps: source, trail, results ----------------------------------------------------------

function startStep(source) {
  state.steps = state.steps.slice(0, state.current + 1);
  const step = state.steps[state.current];
  if (step && !step.result) state.steps.pop(); // replace a source that was never searched
  state.steps.push({ source, changes: [], text: "", result: null });
  state.current = state.steps.length - 1;
  setChanges([]);
  $("text").value = "";
  render();
}

function goTo(i) {
  state.current = i;
  const step = state.steps[i];
  setChanges(step.changes);
  $("text").value = step.text;
  render();
}

function describe(step) {
  if (step.text) return step.text;
  if (step.changes.length) return step.changes.map(([f, t]) => `${f} → ${t}`).join(", ");
  return "(no change yet)";
}

function render() {
  const step = state.steps[state.current];
  $("source-img").hidden = !step;
  $("drop-hint").hidden = Boolean(step);
  if (step) $("source-img").src = step.source.url;
  $("source-caption").textContent = step ? (step.source.caption || step.source.name || "") : "";
  $("trail").replaceChildren(...state.steps.map((s, i) => {
    const li = el("li", { className: i === state.current ? "current" : "", title: "return here" },
      [el("img", { src: s.source.url, alt: "" }), el("span", { textContent: describe(s) })]);
    li.addEventListener("click", () => goTo(i));
    return li;
  }));
  renderResults(step && step.result);
}

function renderResults(result) {
  $("results-hint").hidden = Boolean(result);
  $("warnings").hidden = !(result && result.warnings.length);
  $("warnings").textContent = result ? result.warnings.join("\n") : "";
  $("results").replaceChildren(...(result ? result.results : []).map((hit) => {
    const fig = el("figure", { className: hit.hit ? "result hit" : "result",
      title: "use as the new source" }, [
      el("img", { src: thumb(hit.id), alt: hit.caption || "", loading: "lazy" }),
      el("figcaption", {}, [el("span", { className: "score",
        textContent: `#${hit.rank} · ${hit.score.toFixed(3)} ` }),
      el("span", { textContent: hit.caption || hit.path })])]);
    fig.dataset.id = hit.id;
    fig.addEventListener("click", () => startStep({ id: hit.id, caption: hit.caption,
      url: thumb(hit.id) }));
    return fig;
  }));
}

async function search() {
  const step = state.steps[state.current];
  showError("");
  if (!step) return showError("Pick a source image first.");
  const changes = readChanges();
  const text = $("text").value.trim();
  const form = new FormData();
  if (step.source.file) form.append("image", step.source.file, step.source.name);
  else form.append("id", step.source.id);
  form.append("changes", JSON.stringify(changes.map(([from, to]) => ({ from, to }))));
  if (text) form.append("text", text);
  form.append("k", $("k").value);
  $("search").disabled = true;
  try {
    step.result = await getJSON("/api/query", { method: "POST", body: form });
    step.changes = changes;
    step.text = text;
    render();
  } catch (err) {
    showError(err.message);
  } finally {
    $("search").disabled = false;
  }
}

// ---- source pickers -----------------------------------------------------------------------

function useFile(file) {
  if (!file) return;
  showError("");
  startStep({ file, name: file.name, url: URL.createObjectURL(file) });
}

async function showSample() {
  try {
    const { items } = await getJSON("/api/sample?n=12");
    $("sample").replaceChildren(...items.map((item) => {
      const img = el("img", { src: thumb(item.id, 128), alt: item.caption || "",
        title: item.caption || item.path });
      img.addEventListener("click", () => startStep({ id: item.id, caption: item.caption,
        url: thumb(item.id) }));
      return img;
    }));
  } catch (err) {
    showError(err.message);
  }
}

async function init() {
  const drop = $("drop");
  $("file-input").addEventListener("change", (e) => useFile(e.target.files[0]));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    useFile(e.dataTransfer.files[0]);
  });
  $("sample-button").addEventListener("click", showSample);
  $("add-change").addEventListener("click", () => addChange());
  $("search").addEventListener("click", search);
  setChanges([]);
  try {
    const [vocab, health] = await Promise.all([getJSON("/api/vocab"), getJSON("/api/health")]);
    state.words = vocab.words;
    state.known = new Set(vocab.words);
    $("status").textContent =
      `${health.index.size.toLocaleString()} items · ${health.model.composer} · ${health.device}`;
  } catch (err) {
    showError(err.message);
  }
  document.body.dataset.ready = "true";
}

init();
