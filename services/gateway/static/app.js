// The web chat's controller: API key, model picker, and the conversation's turns.
// Streaming and resume live in stream.js (Chat Completions) and responses.js (Responses),
// the DOM in view.js.
import { chosenApi, extraFields } from "./extras.js";
import { responsesBody, streamResponse } from "./responses.js";
import { chatBody, HttpError, streamChat } from "./stream.js";
import { addAssistantTurn, addUserTurn, clearConversation, describeError } from "./view.js";

const $ = (id) => document.getElementById(id);
const form = $("composer");
const prompt = $("prompt");
const sendButton = $("send");
const stopButton = $("stop");
const regenerateButton = $("regenerate");
const modelSelect = $("model");
const notice = $("notice");
const noticeText = $("notice-text");
const noticeKeyButton = $("notice-key");
const keyDialog = $("key-dialog");
const keyForm = $("key-form");
const keyInput = $("key-input");
const keyError = $("key-error");

// sessionStorage: the key lives as long as the tab, and never leaves this origin.
const KEY_STORAGE = "tokenbus.apiKey";
const MODEL_STORAGE = "tokenbus.model";
const ALIASES = ["auto", "small", "large"];
const LABELS = { auto: "auto (routed per prompt)", small: "small tier", large: "large tier" };
const TOOLS_NOT_RUN = "The model asked to call tools. This page shows the calls but cannot run them.";

let apiKey = sessionStorage.getItem(KEY_STORAGE);
let devMode = false;
/** The conversation as sent to the API: [{role, content}], the user's and the answers' texts
 * (what of an answer the model sees again: see keepInHistory). */
let history = [];
/** The answer being streamed, or null. */
let current = null;

// ---- notices (errors that belong to no answer: a send that failed, a key that was refused)

function showNotice(message, { keyAction = false } = {}) {
  noticeText.textContent = message;
  noticeKeyButton.hidden = !keyAction;
  notice.hidden = false;
}

function hideNotice() {
  notice.hidden = true;
}

// ---- API key and models

function authHeaders(key) {
  return key ? { authorization: `Bearer ${key}` } : {};
}

function fillModels(ids) {
  const chosen = modelSelect.value || sessionStorage.getItem(MODEL_STORAGE) || "auto";
  const names = [...new Set([...ALIASES, ...ids])];
  modelSelect.replaceChildren(
    ...names.map((name) => {
      const option = document.createElement("option");
      option.value = name;
      option.textContent = LABELS[name] ?? name;
      return option;
    }),
  );
  modelSelect.value = names.includes(chosen) ? chosen : "auto";
}

/** GET /v1/models with `key` (none: the dev-mode probe); the response, or null offline. */
async function fetchModels(key) {
  try {
    const response = await fetch("/v1/models", { headers: authHeaders(key) });
    if (response.ok) fillModels((await response.json()).data.map((m) => m.id));
    return response;
  } catch {
    return null;
  }
}

function openKeyDialog(message = "") {
  keyInput.value = "";
  keyError.textContent = message;
  if (!keyDialog.open) keyDialog.showModal();
  keyInput.focus();
}

keyDialog.addEventListener("cancel", (event) => {
  if (!apiKey) event.preventDefault(); // without a key nothing works: the question stays
});

keyForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const value = keyInput.value.trim();
  if (devMode) {
    saveKey(value || "dev"); // the gateway ignores it; the SDK examples use "dev" too
    return;
  }
  if (!value) {
    keyError.textContent = "Enter your API key.";
    return;
  }
  keyError.textContent = "Checking…";
  const response = await fetchModels(value);
  if (response === null) keyError.textContent = "Could not reach the gateway. Try again.";
  else if (response.status === 401 || response.status === 403) {
    keyError.textContent = "The gateway did not accept this key. Check it and try again.";
  } else saveKey(value);
});

function saveKey(key) {
  apiKey = key;
  sessionStorage.setItem(KEY_STORAGE, key);
  keyError.textContent = "";
  keyDialog.close();
  hideNotice();
  prompt.focus();
}

modelSelect.addEventListener("change", () => sessionStorage.setItem(MODEL_STORAGE, modelSelect.value));

// ---- the conversation

function setBusy(busy) {
  sendButton.hidden = busy;
  stopButton.hidden = !busy;
  stopButton.disabled = false;
  regenerateButton.disabled = busy || !history.some((m) => m.role === "user");
  form.setAttribute("aria-busy", String(busy));
}

/** Give a text that could not be sent back to the composer, ahead of anything typed since. */
function restoreInput(text) {
  prompt.value = prompt.value ? `${text}\n${prompt.value}` : text;
  prompt.focus();
}

function send() {
  const text = prompt.value;
  if (current || !text.trim()) return;
  if (!apiKey) {
    openKeyDialog(); // the text stays in the composer
    return;
  }
  const extra = extraFields();
  if (extra === null) return; // the problem is shown under the box; the text stays
  hideNotice();
  prompt.value = "";
  history.push({ role: "user", content: text });
  answer({ userTurn: addUserTurn(text), text, extra });
}

function regenerate() {
  if (current) return;
  const extra = extraFields();
  if (extra === null) return;
  hideNotice();
  const last = $("conversation").lastElementChild;
  if (last?.classList.contains("assistant")) last.remove();
  if (history.at(-1)?.role === "assistant") history.pop();
  if (history.length) answer({ extra });
}

/**
 * Stream the answer to `history`, with the `extra` request fields (from Advanced);
 * `userTurn`/`text` are undone and restored if it fails.
 */
async function answer({ userTurn = null, text = null, extra = {} }) {
  const view = addAssistantTurn();
  const run = {
    view,
    controller: new AbortController(),
    requestId: null,
    cancel: null, // asks the gateway to stop generating, once the stream says how
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
  current = run;
  setBusy(true);
  const responses = chosenApi() === "responses"; // the same answer, through either API
  const body = (responses ? responsesBody : chatBody)({ extra, model: modelSelect.value, history });
  try {
    const stream = responses ? streamResponse : streamChat;
    await stream({ body, apiKey, signal: run.controller.signal, on: handlers(run) });
    if (run.finish === "cancelled") {
      view.end("stopped"); // by a cancel from elsewhere: another tab, the API, an operator
      view.setStatus("This answer was cancelled.");
    } else {
      view.end("done");
      if (run.finish === "length") view.setStatus("The answer reached its length limit.");
      else if (run.finish === "tool_calls") view.setStatus(TOOLS_NOT_RUN);
      else if (run.reconnects) view.setStatus(""); // the facts line keeps the count
    }
  } catch (err) {
    if (run.discarded) return;
    if (run.stopped) {
      view.end("stopped");
      view.setStatus("Stopped.");
    } else if (!run.answered) {
      // Nothing was generated: take the turn back and return the text, so it is never lost.
      view.turn.remove();
      if (userTurn) {
        userTurn.remove();
        history.pop();
        restoreInput(text);
      }
      const keyAction = err instanceof HttpError && (err.status === 401 || err.status === 403);
      showNotice(describeError(err), { keyAction });
    } else {
      view.end("failed");
      view.setStatus(describeError(err), "error");
    }
  } finally {
    if (!run.discarded) {
      keepInHistory(view);
      current = null;
      setBusy(false);
    }
  }
}

/**
 * Add what of a finished answer the model should see next to `history`. A stopped or broken
 * answer goes as far as it got, as shown.
 *
 * - Tool calls are left out (the answer's text, if it had any, is kept as a plain assistant
 *   turn; an answer of calls alone leaves no turn, so two user turns follow each other, which
 *   OpenAI accepts). OpenAI refuses an assistant turn with `tool_calls` unless a `tool`
 *   message answers each call id; this page runs no tools, so it has no results to give.
 *   Made-up placeholder results would keep the request valid but tell the model a tool ran
 *   and said something, and a stopped call's arguments are cut-off JSON: leaving the calls
 *   out is valid for any OpenAI-compatible backend and tells the model nothing untrue.
 * - Reasoning is left out: DeepSeek's API refuses `reasoning_content` in input messages, and
 *   reasoning models do not expect to see their earlier reasoning again.
 * - A refusal goes back as the turn's content: `refusal` is an OpenAI-only input field that
 *   other backends may refuse, while text content is valid everywhere.
 */
function keepInHistory(view) {
  const content = view.text || view.refusalText;
  if (content) history.push({ role: "assistant", content });
}

function handlers(run) {
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

function stop() {
  const run = current;
  if (!run || run.stopped) return;
  run.stopped = true;
  stopButton.disabled = true;
  run.view.setStatus("Stopping…");
  // Before the response headers (Responses: its first event) there is no id to cancel yet,
  // and aborting now would lose it and leave the model generating for the grace period:
  // halt() runs when the id comes (see handlers.cancelable).
  if (run.cancel) halt(run);
}

/** Stop for real: tell the gateway (so the upstream model stops), then drop the stream. */
function halt(run) {
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

function newChat() {
  if (current) {
    stop();
    current.discarded = true;
    current = null;
  }
  history = [];
  clearConversation();
  hideNotice();
  setBusy(false);
  prompt.focus();
}

// ---- controls and keys

form.addEventListener("submit", (event) => {
  event.preventDefault();
  send();
});
stopButton.addEventListener("click", stop);
regenerateButton.addEventListener("click", regenerate);
$("new-chat").addEventListener("click", newChat);
$("change-key").addEventListener("click", () => openKeyDialog());
noticeKeyButton.addEventListener("click", () => openKeyDialog());

prompt.addEventListener("keydown", (event) => {
  // Enter sends, Shift+Enter is a new line; never while an IME is composing a character.
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    send();
  }
});

document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && current && !keyDialog.open) {
    event.preventDefault();
    stop();
  }
});

// ---- start: is this a dev-mode gateway (models answer without a key)?

async function start() {
  fillModels([]);
  const probe = await fetchModels(null);
  devMode = probe?.ok === true;
  for (const hint of document.querySelectorAll(".dev-hint")) hint.hidden = !devMode;
  if (probe === null) showNotice("Could not reach the gateway. Check that it is running, then reload.");
  if (!apiKey) {
    openKeyDialog();
  } else if (!devMode) {
    const response = await fetchModels(apiKey);
    if (response?.status === 401 || response?.status === 403) {
      showNotice("The saved API key is no longer accepted. Choose “API key” to enter another one.", {
        keyAction: true,
      });
    }
  }
  document.body.dataset.ready = "true"; // for tests and for CSS: the page is wired up
}

setBusy(false);
start();
