// The web chat's controller: the conversation's turns. The API key and models live in
// keys.js, the server-side conversation in conversations.js (the sidebar in sidebar.js),
// streaming and resume in stream.js (Chat Completions) and responses.js (Responses), the DOM
// in view.js. A room (several people and the AI in one conversation, #room=<id>) is room.js's.
import {
  conversationInUrl,
  conversationItems,
  conversationProblem,
  createConversation,
  deleteConversation,
  dropLastTurn,
  forgetConversation,
  keepConversation,
  questions,
  savedConversation,
  showItems,
  whenFree,
} from "./conversations.js";
import { chosenApi, extraFields } from "./extras.js";
import { chosenModel, currentKey, keyDialogOpen, openKeyDialog, startKeys } from "./keys.js";
import { responsesBody, streamResponse } from "./responses.js";
import { currentRoom, enterRoom, exitRoom, onLeaveRoom, roomAnswering, roomInUrl, sendToRoom, stopRoomAnswer } from "./room.js";
import { halt, handlers, newRun } from "./run.js";
import { markCurrent, refreshSidebar } from "./sidebar.js";
import { chatBody, HttpError, streamChat } from "./stream.js";
import { addAssistantTurn, addUserTurn, clearConversation, describeError, hideNotice, showNotice } from "./view.js";

const $ = (id) => document.getElementById(id);
const form = $("composer");
const prompt = $("prompt");
const sendButton = $("send");
const stopButton = $("stop");
const regenerateButton = $("regenerate");

const TOOLS_NOT_RUN = "The model asked to call tools. This page shows the calls but cannot run them.";

/** The conversation's texts: [{role, content}], the user's and the answers' (what of an
 * answer the model sees again: see keepInHistory). Sent whole only where the gateway keeps no
 * conversations; otherwise its questions are what Regenerate and the counts go by. */
let history = [];
/** The open server-side conversation's id; null for a new chat (until its first question). */
let conversationId = null;
/** How many of the conversation's questions the gateway took (each is appended with its
 * answer, or a marker, once the answer ends). */
let saved = 0;
/** The gateway keeps no conversations (503 on creating one): the page sends the history. */
let stateless = false;
/** The conversation being read ({id}), or null; the composer waits for it. */
let loading = null;
/** The answer being streamed, or null. */
let current = null;

// ---- the conversation

function setBusy(busy) {
  sendButton.hidden = busy;
  stopButton.hidden = !busy;
  stopButton.disabled = false;
  sendButton.disabled = loading !== null;
  regenerateButton.disabled = busy || loading !== null || !questions(history);
  form.setAttribute("aria-busy", String(busy || loading !== null));
}

/** Give a text that could not be sent back to the composer, ahead of anything typed since. */
function restoreInput(text) {
  prompt.value = prompt.value ? `${text}\n${prompt.value}` : text;
  prompt.focus();
}

function send() {
  if (currentRoom()) return sendToRoom();
  const text = prompt.value;
  if (current || loading || !text.trim()) return;
  if (!currentKey()) {
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

/**
 * Ask for the last answer again. In a conversation the last turn is deleted from it first and
 * its question sent again as a new turn (dropLastTurn in conversations.js): the model answers
 * the same history, and the conversation, as a reload shows it, keeps only the new answer.
 */
function regenerate() {
  if (current || loading) return;
  const extra = extraFields();
  if (extra === null) return;
  hideNotice();
  const last = $("conversation").lastElementChild;
  if (last?.classList.contains("assistant")) last.remove();
  if (history.at(-1)?.role === "assistant") history.pop();
  if (history.length) answer({ extra, again: true });
}

/** The conversation to send the question in (created for a new chat's first question, after a
 * Regenerate without its last turn), or null when the gateway keeps none. */
async function prepare(run, { text, again }) {
  if (stateless) return null;
  if (!conversationId) {
    let id;
    try {
      id = await createConversation(currentKey(), text ?? history.find((m) => m.role === "user").content);
    } catch (err) {
      if (!(err instanceof HttpError && err.status === 503)) throw err;
      stateless = true; // e.g. no database: the page keeps the history itself, as it used to
      return null;
    }
    if (run.discarded) return null; // New chat meanwhile: this one stays unused
    run.created = true;
    adopt(id, 0);
    refreshSidebar(currentKey());
    return id;
  }
  const id = conversationId;
  if (again) {
    const count = await dropLastTurn({ apiKey: currentKey(), id, history, saved, run });
    if (!run.discarded) saved = count;
  }
  return id;
}

/** Delete the new chat's conversation its first question never reached: no empty chat is
 * listed, and the question, sent again, starts another. */
function abandon() {
  const id = conversationId;
  conversationId = null;
  forgetConversation();
  markCurrent(null);
  deleteConversation(currentKey(), id).finally(() => refreshSidebar(currentKey()));
}

/** `id` is the open conversation, with `count` questions saved. */
function adopt(id, count) {
  conversationId = id;
  saved = count;
  keepConversation(id);
  markCurrent(id);
}

/**
 * Stream the answer to the last question, with the `extra` request fields (from Advanced);
 * `userTurn`/`text` are undone and restored if it fails (`again`: a Regenerate).
 */
async function answer({ userTurn = null, text = null, extra = {}, again = false }) {
  const view = addAssistantTurn();
  const run = newRun(view);
  current = run;
  setBusy(true);
  const responses = chosenApi() === "responses"; // the same answer, through either API
  try {
    const conversation = await prepare(run, { text, again });
    if (run.discarded) return;
    if (run.stopped) throw new DOMException("Stopped before it was sent.", "AbortError");
    run.conversation = conversation;
    // In a conversation only the question goes: the gateway has the history.
    const messages = conversation ? [history.findLast((m) => m.role === "user")] : history;
    const body = (responses ? responsesBody : chatBody)({ extra, model: chosenModel(), messages, conversation });
    const stream = responses ? streamResponse : streamChat;
    const request = { body, apiKey: currentKey(), conversation, signal: run.controller.signal, on: handlers(run) };
    await whenFree(run, () => stream(request));
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
    if (run.stopped && run.sent) {
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
      if (run.created) abandon();
      if (!run.stopped) {
        const keyAction = err instanceof HttpError && (err.status === 401 || err.status === 403);
        showNotice(conversationProblem(err) ?? describeError(err), { keyAction });
      }
    } else {
      view.end("failed");
      view.setStatus(describeError(err), "error");
    }
  } finally {
    if (!run.discarded) {
      if (run.answered && run.conversation) saved += 1; // appended when the answer ended
      keepInHistory(view);
      current = null;
      setBusy(false);
      if (conversationId) refreshSidebar(currentKey()); // its place and time changed
    }
  }
}

/**
 * Add what of a finished answer the model should see next to `history` (sent only where the
 * gateway keeps no conversations). A stopped or broken answer goes as far as it got, as shown.
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

function stop() {
  if (stopRoomAnswer()) return;
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

/** Leave the answer being streamed (it is stopped) and the conversation on screen. */
function leave() {
  exitRoom();
  if (current) {
    stop();
    current.discarded = true;
    current = null;
  }
  history = [];
  conversationId = null;
  saved = 0;
  loading = null;
  clearConversation();
  hideNotice();
}

/** New chat: an empty one; its first question starts a new conversation. */
function newChat() {
  leave();
  forgetConversation();
  markCurrent(null);
  setBusy(false);
  prompt.focus();
}

/** Open room `id` (from the URL: a link someone shared, or New room). */
function openRoom(id) {
  leave();
  markCurrent(id); // a room is a conversation: the sidebar lists it
  refreshSidebar(currentKey());
  setBusy(false);
  enterRoom(id);
}

/** Show conversation `id` (from the URL, the tab's last one, or a pick in the sidebar). */
async function openConversation(id) {
  leave();
  const mine = { id };
  conversationId = id;
  loading = mine;
  markCurrent(id);
  setBusy(false);
  try {
    const items = await conversationItems(currentKey(), id);
    if (loading !== mine) return; // left meanwhile
    history = showItems(items);
    adopt(id, questions(history));
  } catch (err) {
    if (loading !== mine) return;
    if (conversationProblem(err)) {
      // Deleted, or expired: a new chat instead.
      conversationId = null;
      forgetConversation();
      markCurrent(null);
      showNotice("That conversation no longer exists (deleted, or unused for too long). Here is a new chat.");
    } else {
      const keyAction = err instanceof HttpError && (err.status === 401 || err.status === 403);
      showNotice(`The conversation could not be loaded. ${describeError(err)}`, { keyAction });
    }
  } finally {
    if (loading === mine) {
      loading = null;
      setBusy(false);
    }
  }
}

// ---- controls and keys

form.addEventListener("submit", (event) => {
  event.preventDefault();
  send();
});
stopButton.addEventListener("click", stop);
regenerateButton.addEventListener("click", regenerate);
$("new-chat").addEventListener("click", newChat);

prompt.addEventListener("keydown", (event) => {
  // Enter sends, Shift+Enter is a new line; never while an IME is composing a character.
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    send();
  }
});

document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && (current || roomAnswering()) && !keyDialogOpen()) {
    event.preventDefault();
    stop();
  }
});

// A conversation link (the sidebar's, Back and Forward, an edited URL) opens its conversation,
// a room link its room; a URL without either is a new chat.
window.addEventListener("hashchange", () => {
  const room = roomInUrl();
  if (room) {
    if (room !== currentRoom()) openRoom(room);
    return;
  }
  if (currentRoom()) {
    leave(); // the room's messages go with it
    markCurrent(null);
    setBusy(false);
  }
  const id = conversationInUrl();
  if (id && id !== conversationId) openConversation(id);
  else if (!id && conversationId) newChat();
});

// ---- start

/** With a key (the tab's, or one just entered): the sidebar, and the conversation to show. */
async function keyed(key) {
  refreshSidebar(key);
  const room = roomInUrl();
  if (room) {
    if (room !== currentRoom()) openRoom(room);
    return;
  }
  const id = conversationId ?? savedConversation();
  if (id && !current && !questions(history)) await openConversation(id);
}

async function start() {
  onLeaveRoom(newChat);
  setBusy(false);
  await startKeys(keyed);
  document.body.dataset.ready = "true"; // for tests and for CSS: the page is wired up
}

start();
