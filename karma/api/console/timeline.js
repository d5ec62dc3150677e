// An action's transitions, in seq order, kept live by the server's event stream. Each SSE
// event is named by the transition's event type (`onmessage` never fires), its id is the
// seq, and EventSource resumes after the last one by itself (Last-Event-ID) on a reconnect.

import { paths } from "./api.js";
import { h, section, timeElement } from "./dom.js";
import { EVENT_TYPES, TERMINAL, stateOf, summarize } from "./lifecycle.js";

const COLUMNS = ["Seq", "Time", "Event", "Detail"];
const LIVE_TEXT = {
  connecting: "connecting…",
  live: "live",
  reconnecting: "reconnecting…",
  ended: "ended",
  stopped: "not live (reading the status instead)",
};

function row(transition, via) {
  const state = stateOf(transition.event_type);
  return h(
    "tr",
    {
      testid: "timeline-row",
      "data-seq": transition.seq,
      "data-event": transition.event_type,
      "data-via": via,
      class: state ? "changes-state" : null,
    },
    h("td", { class: "seq" }, String(transition.seq)),
    h("td", {}, timeElement(transition.ts, { millis: true })),
    h("td", {}, h("code", {}, transition.event_type)),
    h("td", { class: "detail" }, summarize(transition)),
  );
}

/**
 * The timeline panel. `onTransition(transition, via)` hears of each new transition (`via`:
 * "stream" or what `merge` was told);
 * `onStreamLost(detail)` hears that the stream stopped before a terminal transition.
 */
export function liveTimeline(actionId, { onTransition, onStreamLost }) {
  const seen = new Map(); // seq → transition
  const rows = h("tbody", { testid: "timeline-rows" });
  const live = h("span", { class: "live", testid: "live-status", role: "status" });
  const element = section(
    "Timeline",
    "timeline",
    h("p", { class: "help" }, "Updates: ", live),
    h(
      "table",
      { class: "list timeline" },
      h("thead", {}, h("tr", {}, COLUMNS.map((c) => h("th", { scope: "col" }, c)))),
      rows,
    ),
  );
  let source = null;
  let ended = false;

  function setLive(mode) {
    live.dataset.mode = mode;
    live.textContent = LIVE_TEXT[mode];
  }

  function close(mode) {
    if (source) source.close();
    source = null;
    setLive(mode);
  }

  /** Add what was not seen yet; true when something was. */
  function add(transition, via) {
    if (seen.has(transition.seq)) return false;
    seen.set(transition.seq, transition);
    const later = [...rows.children].find((r) => Number(r.dataset.seq) > transition.seq);
    rows.insertBefore(row(transition, via), later || null);
    if (TERMINAL.has(stateOf(transition.event_type))) {
      ended = true;
      close("ended"); // the server ends the stream here, and answers a reconnect with 204
    }
    onTransition(transition, via);
    return true;
  }

  function open() {
    if (ended || source) return;
    setLive("connecting");
    source = new EventSource(paths.transitions(actionId));
    source.addEventListener("open", () => setLive("live"));
    for (const type of EVENT_TYPES) {
      source.addEventListener(type, (event) => add(JSON.parse(event.data), "stream"));
    }
    source.addEventListener("error", (event) => {
      if (ended) return;
      if (event.data) {
        // the server's own `error` event: this stream cannot go on
        let detail = event.data;
        try {
          detail = JSON.parse(event.data).detail || detail;
        } catch {
          // not JSON: say it as it came
        }
        close("stopped");
        onStreamLost(detail);
      } else if (!source || source.readyState === EventSource.CLOSED) {
        // refused (401, 403, 404, 503…): EventSource does not retry those
        close("stopped");
        onStreamLost("the event stream was refused");
      } else {
        setLive("reconnecting");
      }
    });
  }

  return {
    element,
    open,
    close: () => close(ended ? "ended" : "stopped"),
    get streaming() {
      return source !== null;
    },
    get ended() {
      return ended;
    },
    transitions: () => [...seen.values()],
    merge(transitions, via) {
      let added = false;
      for (const t of [...transitions].sort((a, b) => a.seq - b.seq)) added = add(t, via) || added;
      return added;
    },
  };
}
