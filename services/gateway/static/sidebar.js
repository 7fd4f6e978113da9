// The sidebar: the tenant's recent conversations, newest first, each a link to #conv=<id>
// (app.js opens the conversation a link's hash names), or to #room=<id> for one made as a
// room (New room marks it so). Always shown on a wide screen; on a phone it is a drawer the
// "Chats" button opens.
import { recentConversations } from "./conversations.js";

const $ = (id) => document.getElementById(id);
const sidebar = $("sidebar");
const list = $("chat-list");
const listStatus = $("chat-list-status");
const toggle = $("chats-toggle");
const narrow = window.matchMedia("(max-width: 759px)"); // as app.css's drawer

let shown = []; // the conversations listed
let currentId = null;
let asked = 0; // the latest refresh: an older one that answers late is not shown

/** "just now", "5 min ago", "3 h ago", "2 d ago", or the date. */
function ago(seconds) {
  const age = Math.max(0, Date.now() / 1000 - seconds);
  if (age < 60) return "just now";
  if (age < 3600) return `${Math.floor(age / 60)} min ago`;
  if (age < 86_400) return `${Math.floor(age / 3600)} h ago`;
  if (age < 7 * 86_400) return `${Math.floor(age / 86_400)} d ago`;
  return new Date(seconds * 1000).toLocaleDateString();
}

function render() {
  list.replaceChildren(
    ...shown.map((conv) => {
      const when = conv.updated_at ?? conv.created_at;
      const title = document.createElement("span");
      title.className = "chat-title";
      title.textContent = conv.metadata?.title || "Untitled";
      title.title = title.textContent; // the whole of a title the width cuts short
      const time = document.createElement("time");
      time.dateTime = new Date(when * 1000).toISOString();
      time.title = new Date(when * 1000).toLocaleString();
      time.dataset.when = String(when);
      time.textContent = ago(when);
      const link = document.createElement("a");
      link.href = conv.metadata?.room === "true" ? `#room=${conv.id}` : `#conv=${conv.id}`;
      link.dataset.id = conv.id;
      if (conv.id === currentId) link.setAttribute("aria-current", "page");
      link.append(title, time);
      const item = document.createElement("li");
      item.append(link);
      return item;
    }),
  );
  if (!shown.length && !listStatus.dataset.error) listStatus.textContent = "No chats yet.";
}

/** List the tenant's recent conversations again. */
export async function refreshSidebar(apiKey) {
  const mine = ++asked;
  try {
    const data = await recentConversations(apiKey);
    if (mine !== asked) return;
    shown = data;
    listStatus.textContent = "";
    delete listStatus.dataset.error;
  } catch {
    if (mine !== asked) return;
    listStatus.textContent = "Could not load your chats.";
    listStatus.dataset.error = "true";
  }
  render();
}

/** Highlight the open conversation (null: none, a new chat). */
export function markCurrent(id) {
  currentId = id;
  for (const link of list.querySelectorAll("a")) {
    if (link.dataset.id === id) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

// ---- the drawer (phones)

function setOpen(open) {
  sidebar.dataset.open = String(open);
  toggle.setAttribute("aria-expanded", String(open));
  if (open) {
    (list.querySelector("[aria-current]") ?? list.querySelector("a") ?? $("chats-close")).focus();
  } else if (sidebar.contains(document.activeElement)) {
    toggle.focus();
  }
}

toggle.addEventListener("click", () => setOpen(sidebar.dataset.open !== "true"));
$("chats-close").addEventListener("click", () => setOpen(false));
sidebar.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && narrow.matches && sidebar.dataset.open === "true") {
    event.stopPropagation(); // the drawer closes; a streaming answer goes on
    setOpen(false);
  }
});
list.addEventListener("click", (event) => {
  if (event.target.closest("a") && narrow.matches) setOpen(false); // the chat is what was asked for
});
// "5 min ago" stays true (in place: a focused link keeps its focus).
setInterval(() => {
  for (const time of list.querySelectorAll("time")) time.textContent = ago(Number(time.dataset.when));
}, 60_000);
