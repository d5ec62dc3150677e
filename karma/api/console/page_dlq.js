// The dead letters, newest first: why each was set aside and its original bytes; chosen ones
// are published to their topics again.

import { api, paths, withQuery } from "./api.js";
import { fill, h, notice, timeElement } from "./dom.js";

const LIMIT = 200;
const SHORT_VALUE = 400; // longer values fold away behind a <details>
const COLUMNS = ["Time", "Stage", "Source", "Reason", "Key", "Value"];

function valueCell(letter) {
  if (letter.value === null) return h("span", { class: "empty" }, "no value (tombstone)");
  const binary = letter.encoding === "base64";
  const marker = binary
    ? h("span", { class: "badge", testid: "dlq-base64" }, "binary, base64")
    : null;
  const truncated = letter.truncated_from
    ? h("span", { class: "help" }, ` (truncated from ${letter.truncated_from} bytes)`)
    : null;
  const text = h("pre", { class: "value", testid: "dlq-value" }, letter.value);
  if (letter.value.length <= SHORT_VALUE) return [marker, truncated, text];
  const summary = h("summary", {}, `${letter.value.slice(0, 80)}…`);
  return [marker, truncated, h("details", {}, summary, text)];
}

export function dlqPage(main) {
  const status = notice("dlq-status");
  const rows = h("tbody", { testid: "dlq-rows" });
  const all = h("input", {
    type: "checkbox",
    "aria-label": "Choose every letter",
    testid: "dlq-select-all",
  });
  const replay = h(
    "button",
    { type: "button", class: "primary", testid: "dlq-replay", disabled: true },
    "Replay",
  );
  const reload = h("button", { type: "button", testid: "dlq-refresh" }, "Refresh");
  main.append(
    h("h1", {}, "Dead letters"),
    h(
      "p",
      { class: "help" },
      "Messages the bridge could not take, newest first. Replay publishes a letter's original ",
      "bytes to its topic again (a request replayed twice still starts one action).",
    ),
    h("p", { class: "buttons" }, replay, reload),
    status.element,
    h(
      "table",
      { class: "list", testid: "dlq-table" },
      h(
        "thead",
        {},
        h("tr", {}, [all, ...COLUMNS].map((c) => h("th", { scope: "col" }, c))),
      ),
      rows,
    ),
  );

  const boxes = () => [...rows.querySelectorAll("input[type=checkbox]")];
  const chosen = () => boxes().filter((box) => box.checked).map((box) => box.value);
  const update = () => {
    const count = chosen().length;
    replay.disabled = count === 0;
    replay.textContent = count ? `Replay ${count}` : "Replay";
  };
  rows.addEventListener("change", update);
  all.addEventListener("change", () => {
    for (const box of boxes()) box.checked = all.checked;
    update();
  });

  function letterRow(letter) {
    return h(
      "tr",
      { testid: "dlq-row", "data-position": letter.position },
      h(
        "td",
        {},
        h("input", {
          type: "checkbox",
          value: letter.position,
          "aria-label": `Choose letter ${letter.position}`,
          testid: "dlq-select",
        }),
      ),
      h("td", {}, timeElement(letter.ts)),
      h("td", {}, letter.stage),
      h(
        "td",
        {},
        h("code", {}, `${letter.topic} ${letter.partition}:${letter.offset}`),
        h("br"),
        letter.origin,
      ),
      h("td", { testid: "dlq-reason" }, letter.reason),
      h("td", {}, letter.key === null ? "" : h("code", {}, letter.key)),
      h("td", {}, valueCell(letter)),
    );
  }

  async function load() {
    reload.disabled = true;
    try {
      const letters = await api.get(withQuery(paths.dlq, { limit: LIMIT }));
      letters.reverse(); // the API answers oldest first
      const none = h("tr", {}, h("td", { colspan: 7, class: "empty" }, "No dead letters."));
      fill(rows, letters.length ? letters.map(letterRow) : none);
      all.checked = false;
      update();
    } catch (error) {
      status.problem(error);
    } finally {
      reload.disabled = false;
    }
  }

  replay.addEventListener("click", async () => {
    const positions = chosen();
    replay.disabled = true;
    try {
      const replayed = await api.post(paths.replay, { positions });
      status.message(`Replayed ${replayed.length}: ${replayed.map((l) => l.position).join(", ")}`);
      await load();
    } catch (error) {
      status.problem(error);
      update();
    }
  });
  reload.addEventListener("click", () => {
    status.clear();
    load();
  });

  load();
  return null;
}
