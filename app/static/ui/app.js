// The page at /: pick a model, send it images or a drawing, read its card and evaluations.
// Talks to the service's own /api/v1 endpoints with relative URLs; no libraries.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const KEY_STORAGE = "vision-serving-api-key";
  const RUNTIME_NAMES = { litert: "LiteRT", savedmodel: "the SavedModel" };
  const RUNTIME_SOURCES = { export: "model.tflite from the export", "converted at load": "converted at load" };
  const state = {
    models: [],
    name: null,
    card: null,
    version: null,
    apiKey: sessionStorage.getItem(KEY_STORAGE) || "",
    selectSeq: 0,
    predictSeq: 0,
    objectUrls: [],
    plotUrl: null,
    drawn: false,
    drawTimer: null,
  };

  // Helpers ---------------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "style") node.style.cssText = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const pct = (p) => {
    if (p === null || p === undefined) return "n/a";
    if (p > 0 && p < 0.001) return "<0.1%";
    if (p < 1 && p > 0.999) return ">99.9%";
    return `${(p * 100).toFixed(1)}%`;
  };
  const num = (x, digits = 3) => (x === null || x === undefined ? "n/a" : x.toFixed(digits));
  const int = (n) => Number(n).toLocaleString("en");
  const modelUrl = (name) => `api/v1/models/${encodeURIComponent(name)}`;

  class ApiError extends Error {
    constructor(message, status) {
      super(message);
      this.status = status;
    }
  }

  async function api(path, options = {}) {
    const headers = new Headers(options.headers || {});
    if (state.apiKey) headers.set("Authorization", `Bearer ${state.apiKey}`);
    let response;
    try {
      response = await fetch(path, { ...options, headers });
    } catch (error) {
      throw new ApiError(`Could not reach the service: ${error.message}`, 0);
    }
    if (response.ok) return response;
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body && typeof body.error === "string") message = body.error;
    } catch {
      // not JSON: keep the status line
    }
    if (response.status === 401) $("api-key-box").hidden = false;
    throw new ApiError(message, response.status);
  }

  const getJson = async (path, options) => (await api(path, options)).json();

  function errorBox(error) {
    const status = error.status ? ` (HTTP ${error.status})` : "";
    return el("p", { class: "error", role: "alert" }, `${error.message}${status}`);
  }

  function showPageError(error) {
    const box = $("page-error");
    box.textContent = error ? `${error.message}${error.status ? ` (HTTP ${error.status})` : ""}` : "";
    box.hidden = !error;
  }

  // Models ----------------------------------------------------------------------------

  async function loadModels() {
    let models;
    try {
      ({ models } = await getJson("api/v1/models"));
    } catch (error) {
      $("model-status").textContent = "";
      showPageError(error);
      return;
    }
    showPageError(null);
    state.models = models;
    const select = $("model");
    const wanted = state.name || new URLSearchParams(location.hash.slice(1)).get("model");
    select.replaceChildren(
      ...models.map((m) =>
        el("option", { value: m.name }, `${m.name}${m.version ? ` v${m.version}` : ""} (${m.status})`),
      ),
    );
    if (!models.length) {
      $("model-status").textContent = "The service has no models.";
      return;
    }
    const initial =
      models.find((m) => m.name === wanted) || models.find((m) => m.status === "ready") || models[0];
    select.value = initial.name;
    const current = models.find((m) => m.name === state.name);
    if (!current || current.version !== state.version) await selectModel(initial.name);
    if (models.some((m) => m.status === "loading")) setTimeout(loadModels, 2000);
  }

  async function selectModel(name) {
    const seq = ++state.selectSeq;
    const entry = state.models.find((m) => m.name === name);
    state.name = name;
    state.card = null;
    state.version = null;
    state.predictSeq += 1; // answers still on their way are for the previous model
    history.replaceState(null, "", `#model=${encodeURIComponent(name)}`);
    clearResults();
    $("evaluation").replaceChildren();
    const status = $("model-status");
    if (!entry || entry.status !== "ready") {
      status.textContent = `${name} is ${entry ? entry.status : "unknown"}${entry && entry.error ? `: ${entry.error}` : ""}.`;
      renderCard(null);
      return;
    }
    const runtime = entry.runtime ? `, run by ${RUNTIME_NAMES[entry.runtime.name] || entry.runtime.name}` : "";
    status.textContent = `${name} version ${entry.version} is ready on ${entry.device || "the server"}${runtime}.`;
    let detail;
    try {
      detail = await getJson(modelUrl(name));
    } catch (error) {
      if (seq === state.selectSeq) showPageError(error);
      return;
    }
    if (seq !== state.selectSeq) return;
    showPageError(null);
    state.card = detail.card;
    state.version = detail.version;
    renderCard(detail.card, detail.runtime);
    loadPlot(name, detail.version, seq);
  }

  // Model panel -----------------------------------------------------------------------

  function renderCard(card, runtime) {
    $("model-description").textContent = card ? card.description : "";
    const limits = $("limitations");
    limits.hidden = !(card && card.limitations);
    limits.classList.toggle("strong", Boolean(card && /diagnos/i.test(card.limitations || "")));
    $("limitations-text").textContent = card && card.limitations ? card.limitations : "";
    $("draw").hidden = !card || card.preprocessing.kind !== "mnist-digit";
    $("archive-hint").textContent = card
      ? `Folders named ${card.class_names.join(", ")}, e.g. ${card.class_names[0]}/image.png.`
      : "";
    $("card").replaceChildren(
      ...(card ? cardFacts(card, runtime) : [el("p", { class: "muted" }, "No card.")]),
    );
    $("recorded-evaluation").replaceChildren(card ? evaluationView(card.evaluation) : "");
    const plot = $("training-plot");
    plot.hidden = true;
    $("training-caption").textContent = card ? "Loading…" : "";
  }

  // What runs the served version, and why (chosen and checked by the server at load).
  function runtimeFact(runtime) {
    if (!runtime) return "unknown";
    const source = runtime.source ? ` (${RUNTIME_SOURCES[runtime.source] || runtime.source})` : "";
    return `${RUNTIME_NAMES[runtime.name] || runtime.name}${source}: ${runtime.reason}`;
  }

  function cardFacts(card, runtime) {
    const t = card.training;
    const shape = `${card.input.height}×${card.input.width}×${card.input.channels}`;
    const weights = t.class_weights
      ? Object.entries(t.class_weights).map(([k, v]) => `${k} ${v.toFixed(2)}`).join(", ")
      : "none";
    const minutes = Math.floor(t.duration_seconds / 60);
    const seconds = Math.round(t.duration_seconds % 60);
    const facts = [
      ["Classes", card.class_names.join(", ")],
      ["Input", `${shape} ${card.input.color_mode}, raw pixels ${card.input.value_range.join("–")}`],
      ["Preprocessing", `${card.preprocessing.kind}: ${card.preprocessing.description || ""}`],
      ["Architecture", `${card.architecture}, ${int(card.parameter_count)} parameters`],
      ["Version", `${card.version}, trained ${card.created_at.slice(0, 10)}`],
      [
        "Training",
        `${t.epochs_run} of ${t.epochs_requested} epochs${t.early_stopping ? " (early stopping)" : ""}, ` +
          `batch ${t.batch_size}, ${t.optimizer} at learning rate ${t.learning_rate}, ` +
          `seed ${t.seed}, ${minutes} min ${seconds} s`,
      ],
      ["Validation", t.validation],
      ["Class weights", weights],
      ["Data", t.data.name],
      ["Runtime", runtimeFact(runtime)],
    ];
    const list = el("dl", { class: "facts" }, facts.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
    return [list, countsTable(t.data.counts, card.class_names)];
  }

  function countsTable(counts, classNames) {
    const splits = Object.keys(counts || {});
    if (!splits.length) return el("p", { class: "muted" }, "No data counts recorded.");
    const total = (split) => classNames.reduce((sum, c) => sum + (counts[split][c] || 0), 0);
    return el(
      "div",
      { class: "scroll" },
      el(
        "table",
        { class: "counts" },
        el("caption", {}, "Training data: images per split"),
        el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Class"), splits.map((s) => el("th", { scope: "col" }, s)))),
        el(
          "tbody",
          {},
          classNames.map((c) =>
            el("tr", {}, el("th", { scope: "row" }, c), splits.map((s) => el("td", {}, int(counts[s][c] || 0)))),
          ),
          el("tr", {}, el("th", { scope: "row" }, "All"), splits.map((s) => el("td", {}, int(total(s))))),
        ),
      ),
    );
  }

  async function loadPlot(name, version, seq) {
    const plot = $("training-plot");
    const caption = $("training-caption");
    try {
      const response = await api(
        `${modelUrl(name)}/versions/${version}/plots/training.png`,
      );
      const blob = await response.blob();
      if (seq !== state.selectSeq) return;
      if (state.plotUrl) URL.revokeObjectURL(state.plotUrl);
      state.plotUrl = URL.createObjectURL(blob);
      plot.src = state.plotUrl;
      plot.alt =
        `Training curves of ${name} version ${version}: loss and accuracy on the training ` +
        "and validation data after each epoch.";
      plot.hidden = false;
      caption.replaceChildren(
        `Loss and accuracy per epoch while ${name} trained. `,
        el("a", { href: state.plotUrl, target: "_blank" }, "Open full size"),
      );
    } catch (error) {
      if (seq !== state.selectSeq) return;
      plot.hidden = true;
      caption.textContent =
        error.status === 404 ? "No training plot was recorded for this version." : error.message;
    }
  }

  // Evaluation view, shared by the recorded evaluation and uploads ---------------------------

  function evaluationView(report) {
    const names = report.class_names;
    const figures = [
      ["Images", int(report.count)],
      ["Accuracy", pct(report.accuracy)],
      ...(report.roc_auc !== null && report.roc_auc !== undefined ? [["ROC AUC", num(report.roc_auc)]] : []),
      ...(report.macro_avg ? [["Macro F1", num(report.macro_avg.f1)]] : []),
      ...(report.loss !== null && report.loss !== undefined ? [["Loss", num(report.loss)]] : []),
    ];
    const summary = el(
      "div",
      { class: "summary" },
      figures.map(([k, v]) => el("div", { "data-figure": k }, el("span", { class: "muted" }, k), el("span", { class: "figure" }, v))),
    );
    const matrix = el(
      "table",
      { class: "confusion" },
      el("caption", {}, "Confusion matrix: rows true, columns predicted"),
      el(
        "thead",
        {},
        el("tr", {}, el("th", { scope: "col" }, "true \\ pred."), names.map((n) => el("th", { scope: "col" }, n))),
      ),
      el(
        "tbody",
        {},
        report.confusion_matrix.map((row, i) => {
          const rowTotal = row.reduce((a, b) => a + b, 0) || 1;
          return el(
            "tr",
            {},
            el("th", { scope: "row" }, names[i]),
            row.map((count, j) => {
              const share = count / rowTotal;
              const alpha = count ? 0.12 + 0.78 * share : 0;
              const rgb = i === j ? "31, 122, 58" : "179, 38, 30";
              const style = `background: rgba(${rgb}, ${alpha.toFixed(3)});${alpha > 0.55 ? " color: #fff;" : ""}`;
              return el(
                "td",
                { class: i === j ? "diagonal" : null, style, title: `true ${names[i]}, predicted ${names[j]}: ${count}` },
                String(count),
              );
            }),
          );
        }),
      ),
    );
    const perClass = el(
      "table",
      { class: "per-class" },
      el("caption", {}, "Per class, one against the rest"),
      el(
        "thead",
        {},
        el("tr", {}, ["Class", "Precision", "Recall", "Specificity", "F1", "Support"].map((h) => el("th", { scope: "col" }, h))),
      ),
      el(
        "tbody",
        {},
        names.map((n) => {
          const m = report.per_class[n];
          return el(
            "tr",
            {},
            el("th", { scope: "row" }, n),
            [m.precision, m.recall, m.specificity, m.f1].map((x) => el("td", {}, num(x))),
            el("td", {}, int(m.support)),
          );
        }),
      ),
    );
    return el(
      "div",
      { class: "evaluation" },
      summary,
      el("div", { class: "scroll" }, matrix),
      el("div", { class: "scroll" }, perClass),
    );
  }

  // Predictions -------------------------------------------------------------------------

  function clearResults() {
    for (const url of state.objectUrls) URL.revokeObjectURL(url);
    state.objectUrls = [];
    $("results").replaceChildren();
  }

  async function predict(files) {
    if (!files.length) return;
    const results = $("results");
    const card = state.card;
    if (!card) {
      results.replaceChildren(errorBox(new Error("Pick a model that is ready first.")));
      return;
    }
    const seq = ++state.predictSeq;
    const form = new FormData();
    for (const file of files) form.append("files", file, file.name);
    const url =
      `${modelUrl(state.name)}/predict?top_k=${card.class_names.length}&include_preprocessed=true`;
    results.setAttribute("aria-busy", "true");
    try {
      const body = await getJson(url, { method: "POST", body: form });
      if (seq !== state.predictSeq) return;
      clearResults();
      // One card per file, in the order sent: an answer, or why that file was not read.
      const views = [
        ...body.predictions.map((p) => [p.index, resultView(p, files[p.index], card)]),
        ...body.errors.map((e) => [e.index, fileErrorView(e)]),
      ];
      views.sort((a, b) => a[0] - b[0]);
      results.append(...views.map(([, view]) => view));
    } catch (error) {
      if (seq !== state.predictSeq) return;
      clearResults();
      results.append(errorBox(error));
    } finally {
      if (seq === state.predictSeq) results.setAttribute("aria-busy", "false");
    }
  }

  function fileErrorView(fileError) {
    return el(
      "article",
      { class: "result file-error" },
      el("h3", {}, fileError.filename),
      el("p", { class: "error", role: "alert" }, `${fileError.error} (HTTP ${fileError.status})`),
    );
  }

  function resultView(prediction, file, card) {
    const original = URL.createObjectURL(file);
    state.objectUrls.push(original);
    const size = `${card.input.height}×${card.input.width}`;
    const byClass = [...prediction.top_k].sort((a, b) => a.class_index - b.class_index);
    const mine = el("img", { src: original, alt: `Your image ${prediction.filename}` });
    mine.addEventListener("error", () => mine.replaceWith(el("span", { class: "muted" }, "(no preview)")));
    return el(
      "article",
      { class: "result", "data-label": prediction.label },
      el("h3", {}, prediction.filename),
      el(
        "div",
        { class: "pictures" },
        el("figure", {}, mine, el("figcaption", {}, "Your image")),
        prediction.preprocessed_png
          ? el(
              "figure",
              {},
              el("img", {
                class: "seen",
                src: `data:image/png;base64,${prediction.preprocessed_png}`,
                alt: `What the model saw: the ${size} input made from ${prediction.filename}, scaled up`,
              }),
              el("figcaption", {}, `Model input ${size}`),
            )
          : null,
      ),
      el(
        "div",
        { class: "scores" },
        prediction.digit_found === false
          ? el(
              "p",
              { class: "notice no-digit", role: "status" },
              "No digit found: the picture looks blank (or holds only lines or a paper edge). ",
              "The scores below are the model's guess about an empty field.",
            )
          : null,
        el(
          "p",
          { class: "verdict" },
          prediction.digit_found === false ? "Best guess for an empty field: " : "Read as ",
          el("strong", { class: "predicted" }, prediction.label),
          ` (${pct(prediction.confidence)} probability)`,
        ),
        el(
          "ul",
          { class: "bars", "aria-label": `Probability of each class for ${prediction.filename}` },
          byClass.map((c) =>
            el(
              "li",
              { class: c.class_index === prediction.class_index ? "best" : null },
              el("span", { class: "name" }, c.label),
              el(
                "span",
                { class: "track", "aria-hidden": "true" },
                el("span", { class: "fill", style: `width: ${(c.probability * 100).toFixed(2)}%` }),
              ),
              el("span", { class: "value" }, pct(c.probability)),
            ),
          ),
        ),
      ),
    );
  }

  // Files: chooser and drop zone ------------------------------------------------------------

  function setUpFiles() {
    const input = $("files");
    input.addEventListener("change", () => {
      const files = [...input.files];
      input.value = "";
      predict(files);
    });
    const drop = $("drop");
    const over = (on) => (event) => {
      event.preventDefault();
      drop.classList.toggle("over", on);
    };
    drop.addEventListener("dragenter", over(true));
    drop.addEventListener("dragover", over(true));
    drop.addEventListener("dragleave", over(false));
    drop.addEventListener("drop", (event) => {
      over(false)(event);
      predict([...event.dataTransfer.files]);
    });
    // A file dropped beside the zone must not navigate away from the page.
    for (const type of ["dragover", "drop"]) {
      window.addEventListener(type, (event) => {
        if (!drop.contains(event.target)) event.preventDefault();
      });
    }
  }

  // Drawing ---------------------------------------------------------------------------

  function setUpCanvas() {
    const canvas = $("canvas");
    const ctx = canvas.getContext("2d");
    let last = null;
    const whiteInk = () => document.querySelector('input[name="ink"]:checked').value === "white";

    function clear() {
      ctx.fillStyle = whiteInk() ? "#000" : "#fff";
      ctx.fillRect(0, 0, canvas.width, canvas.height);
      canvas.style.background = ctx.fillStyle;
      state.drawn = false;
    }

    function point(event) {
      const rect = canvas.getBoundingClientRect();
      return {
        x: ((event.clientX - rect.left) * canvas.width) / rect.width,
        y: ((event.clientY - rect.top) * canvas.height) / rect.height,
      };
    }

    function stroke(from, to) {
      ctx.strokeStyle = whiteInk() ? "#fff" : "#000";
      ctx.lineWidth = canvas.width / 11;
      ctx.lineCap = "round";
      ctx.lineJoin = "round";
      ctx.beginPath();
      ctx.moveTo(from.x, from.y);
      ctx.lineTo(to.x, to.y);
      ctx.stroke();
      state.drawn = true;
    }

    canvas.addEventListener("pointerdown", (event) => {
      if (event.pointerType === "mouse" && event.button !== 0) return;
      event.preventDefault();
      canvas.setPointerCapture(event.pointerId);
      clearTimeout(state.drawTimer);
      last = point(event);
      stroke(last, last);
    });
    canvas.addEventListener("pointermove", (event) => {
      if (!last) return;
      const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
      for (const e of events.length ? events : [event]) {
        const next = point(e);
        stroke(last, next);
        last = next;
      }
    });
    const end = () => {
      if (!last) return;
      last = null;
      clearTimeout(state.drawTimer);
      state.drawTimer = setTimeout(readDrawing, 350);
    };
    canvas.addEventListener("pointerup", end);
    canvas.addEventListener("pointercancel", end);

    for (const radio of document.querySelectorAll('input[name="ink"]')) {
      radio.addEventListener("change", () => {
        // Swap the colours of what is already drawn.
        const image = ctx.getImageData(0, 0, canvas.width, canvas.height);
        for (let i = 0; i < image.data.length; i += 4) {
          for (let c = 0; c < 3; c++) image.data[i + c] = 255 - image.data[i + c];
        }
        ctx.putImageData(image, 0, 0);
        canvas.style.background = whiteInk() ? "#000" : "#fff";
        if (state.drawn) readDrawing();
      });
    }

    function readDrawing() {
      clearTimeout(state.drawTimer);
      if (!state.drawn) {
        clearResults();
        $("results").append(errorBox(new Error("Draw a digit on the canvas first.")));
        return;
      }
      canvas.toBlob((blob) => predict([new File([blob], "drawing.png", { type: "image/png" })]), "image/png");
    }

    $("clear").addEventListener("click", () => {
      clearTimeout(state.drawTimer);
      clear();
      clearResults();
    });
    $("predict-drawing").addEventListener("click", readDrawing);
    clear();
  }

  // Evaluation upload -------------------------------------------------------------------

  function setUpEvaluation() {
    const form = $("evaluate-form");
    const out = $("evaluation");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const file = $("archive").files[0];
      if (!file || !state.card) return;
      const name = state.name;
      const body = new FormData();
      body.append("archive", file, file.name);
      const button = $("evaluate-button");
      button.disabled = true;
      out.setAttribute("aria-busy", "true");
      out.replaceChildren(el("p", { class: "muted" }, `Evaluating ${name} on ${file.name}…`));
      try {
        const report = await getJson(`${modelUrl(name)}/evaluate`, { method: "POST", body });
        out.replaceChildren(
          el("h3", {}, `${report.model} version ${report.version} on ${file.name}`),
          report.errors.length
            ? el(
                "div",
                { class: "error", role: "alert" },
                el("p", {}, `${report.errors.length} file(s) could not be read and are left out of every figure:`),
                el("ul", {}, report.errors.map((e) => el("li", {}, e.error))),
              )
            : null,
          evaluationView(report),
        );
      } catch (error) {
        out.replaceChildren(errorBox(error));
      } finally {
        button.disabled = false;
        out.setAttribute("aria-busy", "false");
      }
    });
  }

  // Start -----------------------------------------------------------------------------

  function setUpApiKey() {
    const input = $("api-key");
    if (state.apiKey) $("api-key-box").hidden = false;
    $("api-key-box").addEventListener("submit", (event) => {
      event.preventDefault();
      state.apiKey = input.value.trim();
      sessionStorage.setItem(KEY_STORAGE, state.apiKey);
      state.name = null;
      loadModels();
    });
  }

  $("model").addEventListener("change", (event) => selectModel(event.target.value));
  setUpApiKey();
  setUpFiles();
  setUpCanvas();
  setUpEvaluation();
  loadModels();
})();
