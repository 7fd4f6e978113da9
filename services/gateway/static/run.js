// One answer's run: its state, the stream's events onto its view (the text, the facts line
// with its timings, the reconnect notes), and its Stop.
import { HttpError } from "./stream.js";

/** The state of the answer streamed into `view`. */
export function newRun(view) {
  return {
    view,
    controller: new AbortController(),
    requestId: null,
    conversation: null, // the server-side conversation it continues
    created: false, // it began that conversation (a new chat's first question)
    cancel: null, // asks the gateway to stop generating, once the stream says how
    sent: false, // the request is out (before: nothing reached the model)
    answered: false, // the gateway accepted the request (headers received)
    stopped: false,
    discarded: false, // New chat was pressed: nothing of this run may touch the new chat
    t0: performance.now(),
    tFirst: null,
    tLast: null,
    deltas: 0,
    reconnects: 0,
    finish: null, // the answer's finish_reason
  };
}

/** The stream's callbacks (see streamChat in stream.js) for `run`. */
export function handlers(run) {
  const { view } = run;
  const rate = (tokens) => {
    const seconds = (run.tLast - run.tFirst) / 1000;
    return tokens > 1 && seconds > 0 ? (tokens - 1) / seconds : null;
  };
  // Any streamed piece counts as a token for the first-token time and the rate: reasoning,
  // text, refusal or a tool call's fragment (usage's completion_tokens counts them all).
  const tick = () => {
    const now = performance.now();
    if (run.tFirst === null) {
      run.tFirst = now;
      view.setFacts({ ttftMs: now - run.t0 });
    }
    run.tLast = now;
    run.deltas += 1;
    view.setFacts({ rate: rate(run.deltas) });
  };
  const shown = (show) => (piece) => {
    show(piece);
    tick();
  };
  return {
    response({ requestId, route, model, score, reason }) {
      run.answered = true;
      run.requestId = requestId;
      view.turn.dataset.requestId = requestId;
      view.setFacts({ route, model, score, reason });
    },
    cancelable(cancel) {
      run.cancel = cancel;
      if (run.stopped) halt(run); // Stop was pressed while the request waited for a worker
    },
    delta: shown((text) => view.append(text)),
    reasoning: shown((text) => view.reason(text)),
    refusal: shown((text) => view.refuse(text)),
    toolCall: shown((piece) => view.toolCall(piece)),
    model(name) {
      view.setFacts({ model: name });
    },
    finish(reason) {
      run.finish = reason;
    },
    usage(usage) {
      view.setFacts({ usage, rate: rate(usage.completion_tokens) ?? view.values.rate });
    },
    connectionLost(attempt) {
      const retry = attempt > 1 ? ` (attempt ${attempt})` : "";
      view.setStatus(`connection lost — reconnecting…${retry}`, "warn");
    },
    reconnected() {
      run.reconnects += 1;
      view.setStatus("reconnected — continuing where it stopped");
      view.setFacts({ reconnects: run.reconnects });
    },
  };
}

/** Stop for real: tell the gateway (so the upstream model stops), then drop the stream. */
export function halt(run) {
  run
    .cancel()
    .then((response) => {
      if (!response.ok) throw new HttpError(response.status, response.statusText);
    })
    .catch(() => {
      if (!run.discarded) run.view.setStatus("Stopped here, but the gateway could not be told to stop generating.", "error");
    });
  run.controller.abort();
}
