// A room on screen (docs/rooms.md): several people and the AI in one conversation, opened by
// its link (#room=conv_…). Members' messages are turns with their names; an `ask`'s answer
// streams into an answer turn on every member's page at once, through the same view and run
// (Markdown, the facts line) as a chat's answer. The socket is rooms.js's, the panel and the
// name dialog roomview.js's; app.js decides when a room is open (the URL).
import { createConversation } from "./conversations.js";
import { chosenModel, currentKey, openKeyDialog } from "./keys.js";
import { RoomSocket } from "./rooms.js";
import {
  asking,
  displayName,
  hideRoom,
  setAsking,
  setRoomStatus,
  setRoomTitle,
  showMembers,
  showRoom,
  showTyping,
} from "./roomview.js";
import { handlers, newRun } from "./run.js";
import { authHeaders, HttpError, httpError } from "./stream.js";
import { addAssistantTurn, addUserTurn, clearConversation, describeError, hideNotice, showNotice } from "./view.js";

const $ = (id) => document.getElementById(id);
const prompt = $("prompt");
const sendButton = $("send");
const stopButton = $("stop");
const regenerateButton = $("regenerate");

const HASH = /^#room=([A-Za-z0-9_-]{1,64})$/;
const TYPING_EVERY_MS = 2000; // well inside the others' ttl_s (5 s): no flicker between refreshes
const TYPING_IDLE_MS = 5000; // a draft left alone this long is no longer someone typing
const ENDS = { completed: "done", incomplete: "done", cancelled: "stopped", failed: "failed" };
// Errors of the socket that it mends itself by joining again (with `since`).
const REJOINED = new Set(["slow_consumer", "server_shutting_down"]);

/** The open room, or null. */
let room = null;
let onLeave = () => {};

/** The room the URL names, or null. */
export function roomInUrl() {
  return HASH.exec(location.hash)?.[1] ?? null;
}

export function currentRoom() {
  return room?.id ?? null;
}

/** `leave()` runs when the room is left from its panel, or cannot be opened: a new chat. */
export function onLeaveRoom(leave) {
  onLeave = leave;
}

/** The room's conversation: {title}; {problem}, words for what stops it from being joined (a
 * key refused, a room gone); or {} for a passing trouble (joining is tried anyway). */
async function lookUp(id) {
  const response = await fetch(`/v1/conversations/${encodeURIComponent(id)}`, { headers: authHeaders(currentKey()) });
  if (response.ok) return { title: (await response.json()).metadata?.title };
  const err = await httpError(response);
  if (err.status === 404) return { problem: "That room does not exist (deleted, or unused for too long)." };
  if (err.status === 401 || err.status === 403) return { problem: describeError(err) };
  return {};
}

/** Open room `id` (the chat on screen was left by app.js): its panel, a name, the socket. */
export async function enterRoom(id) {
  exitRoom();
  const mine = { id, socket: null, member: null, members: new Map(), typing: new Map() };
  Object.assign(mine, { answers: new Map(), answering: null, stopping: false, pending: new Map() });
  Object.assign(mine, { typingSent: false, typingTimer: null, lastKey: 0, lastTyping: 0 });
  room = mine;
  showRoom("Room");
  setRoomStatus("Joining…");
  updateComposer();
  let found;
  try {
    found = await lookUp(id);
  } catch (err) {
    found = { problem: describeError(err) };
  }
  if (room !== mine) return;
  if (found.problem) return fail(found.problem);
  setRoomTitle(found.title || "Room");
  const user = await displayName();
  if (room !== mine) return;
  if (!user) return onLeave(); // the name was refused: no room
  mine.user = user;
  const on = events(mine);
  const check = async () => (await lookUp(id)).problem ?? null;
  mine.socket = new RoomSocket({ room: id, apiKey: currentKey(), user, on, check });
  mine.socket.open();
}

function fail(problem) {
  const keyAction = /API key/.test(problem);
  onLeave();
  showNotice(problem, { keyAction });
}

/** Leave the open room (the others see it at once). */
export function exitRoom() {
  const mine = room;
  if (!mine) return;
  room = null;
  clearInterval(mine.typingTimer);
  for (const { timer } of mine.typing.values()) clearTimeout(timer);
  mine.socket?.close();
  hideRoom();
  regenerateButton.hidden = false;
  stopButton.hidden = true;
}

// A reload or a closed tab leaves at once, rather than after the presence timeout.
window.addEventListener("pagehide", () => room?.socket?.close());

function updateComposer() {
  if (!room) return;
  sendButton.hidden = false;
  sendButton.disabled = false;
  stopButton.hidden = !room.answering;
  stopButton.disabled = room.stopping;
  regenerateButton.hidden = true; // an answer is the room's, asked again by asking again
  $("composer").setAttribute("aria-busy", String(Boolean(room.answering)));
}

// ---- what the socket says

function events(mine) {
  const live = (fn) => (...args) => {
    if (room === mine) fn(...args);
  };
  return {
    state: live((frame, { again }) => joined(mine, frame, again)),
    frame: live((frame) => {
      if (frame.type === "presence") presence(mine, frame);
      else if (frame.type === "typing") typing(mine, frame);
      else if (frame.type === "message") message(mine, frame, false);
      else if (frame.type === "missed") redraw(mine);
      else stream(mine, frame);
    }),
    error: live((frame) => refused(mine, frame)),
    reconnecting: live((attempt) => {
      const tries = attempt > 1 ? ` (attempt ${attempt})` : "";
      setRoomStatus(`Connection lost — reconnecting…${tries}`, "warn");
    }),
    ended: live((reason) => fail(reason)),
  };
}

function joined(mine, frame, again) {
  mine.member = frame.member;
  mine.members = new Map(frame.members.map((m) => [m.member, m.user]));
  mine.state = frame;
  showMembers(frame.members, mine.member);
  setRoomStatus(again ? "Reconnected." : "");
  if (!again) redraw(mine); // after a reconnect the messages missed follow what is on screen
}

/** The room's messages as its last room_state has them. */
function redraw(mine) {
  const frame = mine.state;
  clearConversation();
  mine.answers.clear();
  mine.answering = null;
  for (const item of frame.history) message(mine, item, true);
  if (frame.answering) answerView(mine, frame.answering); // its events follow from the start
  updateComposer();
}

function presence(mine, frame) {
  if (frame.status === "joined") mine.members.set(frame.member, frame.user);
  else {
    mine.members.delete(frame.member);
    dropTyping(mine, frame.member);
  }
  const list = [...mine.members].map(([member, user]) => ({ member, user }));
  showMembers(list, mine.member);
}

function typing(mine, frame) {
  if (frame.member === mine.member) return;
  dropTyping(mine, frame.member);
  if (frame.active) {
    // Dropped when no refresh comes within its ttl: the typist went quiet, or away.
    const timer = setTimeout(() => dropTyping(mine, frame.member), (frame.ttl_s ?? 5) * 1000);
    mine.typing.set(frame.member, { user: frame.user, timer });
  }
  showTyping([...mine.typing.values()].map((t) => t.user));
}

function dropTyping(mine, member) {
  const typist = mine.typing.get(member);
  if (!typist) return;
  clearTimeout(typist.timer);
  mine.typing.delete(member);
  if (room === mine) showTyping([...mine.typing.values()].map((t) => t.user));
}

/** A member's message, or an answer's end (`past`: of the history on joining). */
function message(mine, frame, past) {
  if (frame.role === "assistant") return answered(mine, frame);
  dropTyping(mine, frame.member);
  const ours = frame.member === mine.member;
  if (ours && !past) mine.pending.delete(mine.pending.keys().next().value); // it went through
  const asked = Boolean(frame.request_id);
  addUserTurn(frame.content, { name: frame.user || "someone", mine: ours, asked });
  if (asked && !past) answerView(mine, frame.request_id, frame.user); // dots until it starts
}

/** The answer turn of `requestId`, made when first needed; it is the one in progress. */
function answerView(mine, requestId, asker = null) {
  let answer = mine.answers.get(requestId);
  if (!answer) {
    const view = addAssistantTurn();
    if (asker) view.turn.setAttribute("aria-label", `tokenbus, answering ${asker}`);
    const run = newRun(view);
    answer = { view, run, on: handlers(run), ended: false };
    mine.answers.set(requestId, answer);
  }
  if (!answer.ended) mine.answering = requestId;
  updateComposer();
  return answer;
}

/** The answer's events, as on /v1/ws: the same to every member. */
function stream(mine, frame) {
  const answer = answerView(mine, frame.request_id);
  const { view, run, on } = answer;
  if (answer.ended) return;
  if (frame.type === "started") {
    if (run.answered) on.model(frame.model); // a retry or fallback before the first token
    else {
      const score = typeof frame.route_score === "number" ? frame.route_score.toFixed(3) : null;
      on.response({ requestId: frame.request_id, route: frame.tier, model: frame.model, score, reason: frame.route_reason });
    }
  } else if (frame.type === "delta") {
    if (frame.reasoning) on.reasoning(frame.reasoning);
    if (frame.refusal) on.refusal(frame.refusal);
    if (frame.content) on.delta(frame.content);
    for (const call of frame.tool_calls ?? []) {
      on.toolCall({ index: call.index, id: call.id, type: call.type, function: { name: call.name, arguments: call.arguments } });
    }
  } else if (frame.type === "completed") {
    on.finish(frame.finish_reason);
    if (frame.usage) on.usage(frame.usage);
    view.end(frame.finish_reason === "cancelled" ? "stopped" : "done");
  } else if (frame.type === "failed") {
    view.end("failed");
    view.setStatus(`The answer failed: ${frame.message || frame.code}`, "error");
  }
}

/** The answer to `frame.request_id` ended (an assistant message): the room may ask again. */
function answered(mine, frame) {
  let answer = frame.request_id ? mine.answers.get(frame.request_id) : null;
  if (!answer) {
    // Of the history (which names no request), or streamed while this page was away: whole.
    const view = addAssistantTurn({ past: true });
    answer = { view, ended: false };
    if (frame.request_id) mine.answers.set(frame.request_id, answer);
  }
  const { view } = answer;
  // The text as the room keeps it: whole even when a cut cost this page some of its deltas.
  if (frame.content && frame.content !== view.text && frame.content !== view.refusalText) {
    view.text = "";
    view.append(frame.content);
  }
  view.end(ENDS[frame.status] ?? "done");
  if (frame.status === "incomplete") view.setStatus("The answer reached its length limit.");
  else if (frame.status === "cancelled") view.setStatus("This answer was cancelled.");
  else if (frame.status === "failed" && !view.status.textContent) view.setStatus("The answer failed.", "error");
  else if (frame.status === "completed") view.setStatus("");
  answer.ended = true;
  if (frame.request_id && mine.answering === frame.request_id) {
    mine.answering = null;
    mine.stopping = false;
  }
  updateComposer();
}

/** An error the socket survives: a message of ours refused comes back to the composer. */
function refused(mine, frame) {
  if (REJOINED.has(frame.code)) return; // the socket closes and joins again with `since`
  if (frame.code === "nothing_to_cancel") {
    mine.stopping = false;
    updateComposer();
    return;
  }
  const sent = mine.pending.get(frame.id);
  if (!sent) return; // a typing refresh refused (rate): the next one will do
  mine.pending.delete(frame.id);
  prompt.value = prompt.value ? `${sent.text}\n${prompt.value}` : sent.text;
  if (sent.ask) setAsking(true);
  const words = {
    room_busy: "The AI is still answering. Ask again once its answer is done.",
    rate_limit_exceeded: "You are sending too fast. Wait a moment, then send again.",
  };
  showNotice(words[frame.code] ?? `The room refused that message: ${frame.message || frame.code}`);
}

// ---- the composer in a room

/** Send the composer's text to the room: to the others, or (Ask the AI) for an answer. */
export function sendToRoom() {
  const mine = room;
  const text = prompt.value;
  if (!mine || !text.trim()) return;
  const ask = asking();
  if (ask && mine.answering) {
    showNotice("The AI is still answering. Ask again once its answer is done.");
    return;
  }
  const sent = ask ? { type: "ask", content: text, model: chosenModel() } : { type: "say", content: text };
  const id = mine.socket?.send(sent);
  if (!id) {
    showNotice("Not connected to the room right now. Your message stays in the box.");
    return;
  }
  hideNotice();
  mine.pending.set(id, { text, ask });
  prompt.value = "";
  if (ask) setAsking(false);
  quiet(mine);
}

/** Stop the answer in progress (any member may): true when a room took the Stop. */
export function stopRoomAnswer() {
  const mine = room;
  if (!mine) return false;
  if (!mine.answering || mine.stopping) return true;
  if (mine.socket?.send({ type: "cancel" })) {
    mine.stopping = true;
    mine.answers.get(mine.answering)?.view.setStatus("Stopping…");
    updateComposer();
  }
  return true;
}

/** Is an answer streaming in the open room? (Escape stops it.) */
export function roomAnswering() {
  return Boolean(room?.answering);
}

// Typing: said at once, refreshed while the draft grows, withdrawn when it is sent, emptied
// or left alone (then the others would otherwise see "typing" under a forgotten draft).
prompt.addEventListener("input", () => {
  const mine = room;
  if (!mine?.socket) return;
  if (!prompt.value.trim()) return quiet(mine);
  mine.lastKey = performance.now();
  if (!mine.typingSent || mine.lastKey - mine.lastTyping >= TYPING_EVERY_MS) sendTyping(mine, true);
  mine.typingTimer ??= setInterval(() => {
    const fresh = performance.now() - mine.lastKey < TYPING_IDLE_MS;
    if (room === mine && prompt.value.trim() && fresh) sendTyping(mine, true);
    else quiet(mine);
  }, TYPING_EVERY_MS);
});

function sendTyping(mine, active) {
  if (!mine.socket?.send({ type: "typing", active })) return;
  mine.typingSent = active;
  mine.lastTyping = performance.now();
}

function quiet(mine) {
  clearInterval(mine.typingTimer);
  mine.typingTimer = null;
  if (mine.typingSent && room === mine) sendTyping(mine, false);
}

// ---- starting one

// New room: a conversation of its own, opened by its link like any shared one (app.js acts
// on the URL); the others join with the link.
$("new-room").addEventListener("click", async () => {
  if (!currentKey()) return openKeyDialog();
  const name = await displayName();
  if (!name) return;
  let id;
  try {
    id = await createConversation(currentKey(), `${name}’s room`, { room: "true" }); // the sidebar links it as one
  } catch (err) {
    const keyAction = err instanceof HttpError && (err.status === 401 || err.status === 403);
    return showNotice(`The room could not be created. ${describeError(err)}`, { keyAction });
  }
  location.hash = `#room=${id}`;
});
$("room-leave").addEventListener("click", () => onLeave());
// Another name: leave, and join again as a new member under it (names are not unique, and a
// member's name is fixed for as long as it is in the room).
$("room-rename").addEventListener("click", async () => {
  const mine = room;
  const name = mine && (await displayName({ ask: true }));
  if (name && room === mine && name !== mine.user) enterRoom(mine.id);
});
