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
    reliabilityUrl: null,
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

  // "(stopped early)" when early stopping ended the run; "(early stopping on)" when it was
  // on but every requested epoch ran; nothing when it was off.
  function earlyStopping(training) {
    if (!training.early_stopping) return "";
    return training.epochs_run < training.epochs_requested
      ? " (stopped early)"
      : " (early stopping on)";
  }

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
    $("recent-predictions").replaceChildren();
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
    renderRecent(detail.recent_predictions);
    loadPlot(name, detail.version, seq);
    loadReliabilityPlot(name, detail.version, detail.card, seq);
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
    $("recorded-evaluation-heading").textContent =
      card && card.imported ? "Evaluation recorded at import" : "Test evaluation recorded at training time";
    $("recorded-evaluation").replaceChildren(
      card && card.evaluation
        ? evaluationView(card.evaluation, card.evaluation_at_argmax)
        : el("p", { class: "muted" }, notEvaluated(card)),
    );
    renderDecision(card);
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
    const shape = `${card.input.height}×${card.input.width}×${card.input.channels}`;
    const facts = [
      ["Classes", card.class_names.join(", ")],
      ["Input", `${shape} ${card.input.color_mode}, raw pixels ${card.input.value_range.join("–")}`],
      ["Preprocessing", `${card.preprocessing.kind}: ${card.preprocessing.description || ""}`],
      ["Architecture", `${card.architecture}, ${int(card.parameter_count)} parameters`],
      ...(card.training ? trainingFacts(card) : importFacts(card)),
      ["Runtime", runtimeFact(runtime)],
    ];
    const list = el("dl", { class: "facts" }, facts.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
    if (card.training) {
      return [list, countsTable(card.training.data.counts, card.class_names, "Training data: images per split")];
    }
    const evaluatedOn = card.imported.evaluated_on; // none: the evaluation section says so
    if (!evaluatedOn) return [list];
    const title = `Evaluation data (${evaluatedOn.name}): images per class`;
    return [list, countsTable(evaluatedOn.counts, card.class_names, title)];
  }

  function trainingFacts(card) {
    const t = card.training;
    const weights = t.class_weights
      ? Object.entries(t.class_weights).map(([k, v]) => `${k} ${v.toFixed(2)}`).join(", ")
      : "none";
    const minutes = Math.floor(t.duration_seconds / 60);
    const seconds = Math.round(t.duration_seconds % 60);
    return [
      ["Version", `${card.version}, trained ${card.created_at.slice(0, 10)}`],
      [
        "Training",
        `${t.epochs_run} of ${t.epochs_requested} epochs${earlyStopping(t)}, ` +
          `batch ${t.batch_size}, ${t.optimizer} at learning rate ${t.learning_rate}, ` +
          `seed ${t.seed}, ${minutes} min ${seconds} s`,
      ],
      ["Validation", t.validation],
      ["Class weights", weights],
      ["Data", t.data.name],
    ];
  }

  // A model trained elsewhere, brought in by `python -m training import`.
  function importFacts(card) {
    const i = card.imported;
    const format = i.source_format === "keras" ? "a Keras file" : `a SavedModel, signature ${i.signature}`;
    return [
      ["Version", `${card.version}, imported ${card.created_at.slice(0, 10)}`],
      ["Imported from", `${i.source} (${format}), ${i.fingerprint.slice(0, 19)}…`],
      ["Pixels", `scaled to ${i.input_range.join("–")} inside the model, the range it was trained on`],
      ["Data", i.evaluated_on ? `evaluated on ${i.evaluated_on.name}` : "not evaluated"],
    ];
  }

  function notEvaluated(card) {
    if (card && card.imported) {
      return `Not evaluated: ${card.imported.source} was imported without labelled data.`;
    }
    return "No evaluation was recorded.";
  }

  function countsTable(counts, classNames, title) {
    const splits = Object.keys(counts || {});
    if (!splits.length) return el("p", { class: "muted" }, "No data counts recorded.");
    const total = (split) => classNames.reduce((sum, c) => sum + (counts[split][c] || 0), 0);
    return el(
      "div",
      { class: "scroll" },
      el(
        "table",
        { class: "counts" },
        el("caption", {}, title),
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
    if (state.card && state.card.imported) {
      plot.hidden = true;
      caption.textContent = `No training curves: ${name} was trained elsewhere and imported.`;
      return;
    }
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

  // Calibration and operating point ----------------------------------------------------
  // The served probabilities are already calibrated (inside the model); the operating
  // point is the threshold the server labels by. The page shows both and decides nothing.

  const threshold = (t) => String(Number(t.toPrecision(4)));

  // "Label PNEUMONIA when P(PNEUMONIA) ≥ 0.37, otherwise NORMAL."
  function decisionRule(point, classNames) {
    const other = classNames.find((c) => c !== point.positive_class);
    return (
      `Label ${point.positive_class} when P(${point.positive_class}) ≥ ${threshold(point.threshold)}, ` +
      `otherwise ${other}.`
    );
  }

  // "the operating point labels PNEUMONIA from P(PNEUMONIA) ≥ 0.37", for each prediction.
  const byOperatingPoint = (point) =>
    `the operating point labels ${point.positive_class} from P(${point.positive_class}) ≥ ${threshold(point.threshold)}`;

  function renderDecision(card) {
    const point = card && card.operating_point;
    const rule = $("decision-rule");
    rule.hidden = !point;
    rule.textContent = point ? `${decisionRule(point, card.class_names)} Goal: ${point.goal}.` : "";
    const section = $("calibration-section");
    section.hidden = !(card && (point || card.calibration));
    $("calibration").replaceChildren(
      ...(point ? [operatingPointView(point, card.class_names)] : []),
      ...(card && card.calibration ? [calibrationView(card.calibration)] : []),
    );
    $("reliability-figure").hidden = true;
  }

  function operatingPointView(point, classNames) {
    const f = point.figures;
    return el(
      "div",
      { class: "operating-point" },
      el("p", {}, el("strong", {}, "Operating point. "), decisionRule(point, classNames)),
      el("p", { class: "muted" }, `Goal: ${point.goal}.`),
      el(
        "p",
        { class: "muted" },
        `On ${point.chosen_on} (${int(f.count)} images): ${point.positive_class} recall ${pct(f.recall)}, ` +
          `specificity ${pct(f.specificity)}, precision ${pct(f.precision)}, accuracy ${pct(f.accuracy)}.`,
      ),
    );
  }

  function calibrationView(calibration) {
    const splits = Object.entries(calibration.splits || {});
    const change = (before, after) => `${num(before, 4)} → ${num(after, 4)}`;
    return el(
      "div",
      { class: "calibration" },
      el(
        "p",
        {},
        el("strong", {}, "Calibration. "),
        `${calibration.method === "temperature" ? "Temperature scaling" : calibration.method}, ` +
          `T = ${num(calibration.temperature, 3)}, fitted on ${calibration.fitted_on}. ` +
          "The probabilities shown are already calibrated.",
      ),
      splits.length
        ? el(
            "div",
            { class: "scroll" },
            el(
              "table",
              { class: "calibration-scores" },
              el("caption", {}, `Before → after calibration (ECE over ${calibration.bins} bins; lower is better)`),
              el(
                "thead",
                {},
                el("tr", {}, ["Split", "ECE", "Brier score"].map((h) => el("th", { scope: "col" }, h))),
              ),
              el(
                "tbody",
                {},
                splits.map(([split, c]) =>
                  el(
                    "tr",
                    { "data-split": split },
                    el("th", { scope: "row" }, split),
                    el("td", {}, change(c.before.ece, c.after.ece)),
                    el("td", {}, change(c.before.brier, c.after.brier)),
                  ),
                ),
              ),
            ),
          )
        : null,
    );
  }

  async function loadReliabilityPlot(name, version, card, seq) {
    if (!card.artifacts || !card.artifacts.reliability_plot) return;
    const figure = $("reliability-figure");
    const plot = $("reliability-plot");
    const caption = $("reliability-caption");
    try {
      const response = await api(`${modelUrl(name)}/versions/${version}/plots/reliability.png`);
      const blob = await response.blob();
      if (seq !== state.selectSeq) return;
      if (state.reliabilityUrl) URL.revokeObjectURL(state.reliabilityUrl);
      state.reliabilityUrl = URL.createObjectURL(blob);
      plot.src = state.reliabilityUrl;
      plot.alt =
        `Reliability diagram of ${name} version ${version}: accuracy against confidence ` +
        "before and after calibration, with the diagonal for perfect calibration.";
      caption.replaceChildren(
        "Accuracy of the most likely class against its probability, per bin. ",
        el("a", { href: state.reliabilityUrl, target: "_blank" }, "Open full size"),
      );
      figure.hidden = false;
    } catch (error) {
      if (seq !== state.selectSeq) return;
      caption.textContent = error.status === 404 ? "No reliability diagram was recorded." : error.message;
      plot.removeAttribute("src");
      figure.hidden = false;
    }
  }

  // Evaluation view, shared by the recorded evaluation and uploads ---------------------------

  function evaluationView(report, atArgmax) {
    const names = report.class_names;
    const given = (x) => x !== null && x !== undefined;
    const figures = [
      ["Images", int(report.count)],
      ["Accuracy", pct(report.accuracy)],
      ...(given(report.roc_auc) ? [["ROC AUC", num(report.roc_auc)]] : []),
      ...(report.macro_avg ? [["Macro F1", num(report.macro_avg.f1)]] : []),
      ...(given(report.loss) ? [["Loss", num(report.loss)]] : []),
      ...(given(report.ece) ? [["ECE", num(report.ece, 4)]] : []),
      ...(given(report.brier) ? [["Brier", num(report.brier, 4)]] : []),
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
      report.decision && report.decision !== "argmax"
        ? el("p", { class: "decision" }, `Labels by the operating point: ${report.decision}.`)
        : null,
      atArgmax ? decisionComparison(report, atArgmax) : null,
      el("div", { class: "scroll" }, matrix),
      el("div", { class: "scroll" }, perClass),
    );
  }

  // The same images labelled by the operating point and by argmax, side by side.
  function decisionComparison(report, atArgmax) {
    const names = report.class_names;
    const row = (label, r) =>
      el(
        "tr",
        {},
        el("th", { scope: "row" }, label),
        el("td", {}, pct(r.accuracy)),
        names.map((n) => el("td", {}, pct(r.per_class[n].recall))),
      );
    return el(
      "div",
      { class: "scroll" },
      el(
        "table",
        { class: "decisions" },
        el("caption", {}, "Operating point against argmax on the same images"),
        el(
          "thead",
          {},
          el(
            "tr",
            {},
            ["Labels by", "Accuracy", ...names.map((n) => `${n} recall`)].map((h) => el("th", { scope: "col" }, h)),
          ),
        ),
        el("tbody", {}, row(report.decision, report), row("argmax", atArgmax)),
      ),
    );
  }

  // Recent predictions and drift ------------------------------------------------------
  // The server keeps the last predictions of each version and compares them with the
  // profile of the test split in the model card; the page only shows its verdict.

  const DRIFT_VERDICTS = {
    ok: (r) => `No drift: score ${num(r.scores.drift_score, 2)} (drift is above 1).`,
    drift: (r) =>
      `Drift: score ${num(r.scores.drift_score, 2)}, above 1. Recent inputs are answered unlike ` +
      "the test data the model was checked on; look at what is being sent.",
    warming_up: (r) => `Not scored yet: ${r.note}.`,
    no_reference: () =>
      "Not scored: no reference in the card (the model was exported without a prediction profile).",
  };

  async function refreshRecent() {
    const seq = state.selectSeq;
    if (!state.card) return;
    try {
      const detail = await getJson(modelUrl(state.name));
      if (seq === state.selectSeq) renderRecent(detail.recent_predictions);
    } catch (error) {
      if (seq === state.selectSeq) $("recent-predictions").replaceChildren(errorBox(error));
    }
  }

  function renderRecent(recent) {
    const box = $("recent-predictions");
    $("recent-refresh").hidden = !recent;
    if (!recent) {
      box.replaceChildren(
        el("p", { class: "muted" }, "The server does not watch recent predictions (VISION_SERVING_DRIFT_WINDOW=0)."),
      );
      return;
    }
    const verdict = el(
      "p",
      { class: `drift-state ${recent.status}`, "data-state": recent.status, role: "status" },
      DRIFT_VERDICTS[recent.status](recent),
    );
    const size = el(
      "p",
      { class: "muted" },
      `${int(recent.count)} of the last ${int(recent.window_size)} predictions of this version ` +
        "(each server process keeps its own).",
    );
    const details = recent.window ? [recentFigures(recent), classMixTable(recent)] : [];
    box.replaceChildren(verdict, size, ...details);
  }

  function recentFigures({ window, reference, scores }) {
    const against = (key, format) =>
      reference && reference[key] !== null ? ` (test ${format(reference[key])})` : "";
    const figures = [
      ["Mean confidence", `${pct(window.mean_confidence)}${against("mean_confidence", pct)}`],
      [
        `Low confidence (< ${pct(window.low_confidence_threshold)})`,
        `${pct(window.low_confidence_share)}${against("low_confidence_share", pct)}`,
      ],
      ["Mean entropy", `${num(window.mean_entropy)} nats${against("mean_entropy", (x) => num(x))}`],
      ...(window.no_digit_share !== null
        ? [["No digit found", `${pct(window.no_digit_share)}${against("no_digit_share", pct)}`]]
        : []),
      ...(scores
        ? [
            ["Confidence PSI", num(scores.confidence_psi)],
            ["Class mix PSI", num(scores.class_mix_psi)],
          ]
        : []),
    ];
    return el(
      "div",
      { class: "summary recent-figures" },
      figures.map(([k, v]) => el("div", { "data-figure": k }, el("span", { class: "muted" }, k), el("span", { class: "figure" }, v))),
    );
  }

  function classMixTable({ window, reference }) {
    const names = Object.keys(window.class_mix);
    return el(
      "div",
      { class: "scroll" },
      el(
        "table",
        { class: "class-mix" },
        el("caption", {}, reference ? "Class mix: recent predictions and the test split" : "Class mix of recent predictions"),
        el(
          "thead",
          {},
          el(
            "tr",
            {},
            el("th", { scope: "col" }, "Class"),
            el("th", { scope: "col" }, "Recent"),
            reference ? el("th", { scope: "col" }, "Test split") : null,
          ),
        ),
        el(
          "tbody",
          {},
          names.map((n) =>
            el(
              "tr",
              { "data-class": n },
              el("th", { scope: "row" }, n),
              el("td", {}, pct(window.class_mix[n])),
              reference ? el("td", {}, pct(reference.class_mix[n])) : null,
            ),
          ),
        ),
      ),
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
      refreshRecent();
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
          card.operating_point
            ? el("span", { class: "muted by-rule" }, `; ${byOperatingPoint(card.operating_point)}`)
            : null,
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
          evaluationView(report, report.evaluation_at_argmax),
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
  $("recent-refresh").addEventListener("click", refreshRecent);
  loadModels();
})();
