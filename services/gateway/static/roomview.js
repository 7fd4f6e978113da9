// A room's own DOM: the panel above the conversation (its title, link, status and members),
// the "… is typing" line above the composer, the composer's room controls, and the dialog that
// asks for the name the others see. The messages and answers are turns, as in a chat (view.js).
const $ = (id) => document.getElementById(id);
const panel = $("room");
const title = $("room-title");
const status = $("room-status");
const link = $("room-link");
const members = $("room-members");
const typingLine = $("room-typing");
const askToggle = $("ask-ai");
const prompt = $("prompt");
const nameDialog = $("name-dialog");
const nameInput = $("name-input");
const nameError = $("name-error");

const NAME_STORAGE = "tokenbus.roomName";
const CHAT_PLACEHOLDER = prompt.placeholder;
// As the server checks a name: 1 to 40 characters, no ":" (the AI reads "<name>: <text>"),
// no control characters, and not the AI's own.
const NAME_CHARS = 40;
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

export function showRoom(name) {
  title.textContent = name;
  link.value = location.href;
  panel.hidden = false;
  askToggle.closest("label").hidden = false;
  setPlaceholder();
}

export function hideRoom() {
  panel.hidden = true;
  members.replaceChildren();
  showTyping([]);
  setRoomStatus("");
  askToggle.closest("label").hidden = true;
  askToggle.checked = false;
  prompt.placeholder = CHAT_PLACEHOLDER;
}

export function setRoomTitle(name) {
  title.textContent = name;
}

export function setRoomStatus(text, kind = "info") {
  status.textContent = text;
  status.className = `room-status ${kind}`;
}

/** Does the composer ask the AI (rather than only tell the room)? */
export function asking() {
  return askToggle.checked;
}

/** Tick or untick "Ask the AI" (after an ask the next message only tells the room again:
 * an ask costs tokens; an ask refused comes back as one). */
export function setAsking(on) {
  askToggle.checked = on;
  setPlaceholder();
}

function setPlaceholder() {
  prompt.placeholder = askToggle.checked
    ? "Ask the AI, in front of the room… (Enter sends)"
    : "Message the room… (Enter sends; tick “Ask the AI” for an answer)";
}
askToggle.addEventListener("change", setPlaceholder);

/** The members ([{member, user}], in the order they came), `me` marked as you. */
export function showMembers(list, me) {
  members.replaceChildren(
    ...list.map(({ member, user }) => {
      const item = document.createElement("li");
      item.dataset.member = member;
      item.textContent = member === me ? `${user} (you)` : user;
      if (member === me) item.className = "me";
      return item;
    }),
  );
  members.setAttribute("aria-label", `Members (${list.length})`);
}

/** Who is typing (names), as one line: empty when nobody is. */
export function showTyping(names) {
  let text = "";
  if (names.length === 1) text = `${names[0]} is typing…`;
  else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
  else if (names.length > 2) text = `${names.length} people are typing…`;
  typingLine.textContent = text;
  typingLine.hidden = !text;
}

// ---- the name others see

/** Why `name` cannot be a member's name, or null. */
export function nameProblem(name) {
  if (!name) return "Enter the name the others will see.";
  if (name.length > NAME_CHARS) return `At most ${NAME_CHARS} characters.`;
  if (name.includes(":") || CONTROL.test(name)) return "A name cannot contain “:” or control characters.";
  if (name.toLowerCase() === "assistant") return "“assistant” is the AI’s name in the room.";
  return null;
}

/** The name this browser joins rooms as (kept in localStorage), asked for the first time:
 * resolves to it, or to null when the dialog was cancelled. */
export function displayName({ ask = false } = {}) {
  const saved = localStorage.getItem(NAME_STORAGE);
  if (saved && !nameProblem(saved) && !ask) return Promise.resolve(saved);
  nameInput.value = saved ?? "";
  nameError.textContent = "";
  return new Promise((resolve) => {
    const done = (value) => {
      nameDialog.removeEventListener("submit", submit);
      nameDialog.removeEventListener("cancel", cancel);
      nameDialog.close();
      resolve(value);
    };
    const submit = (event) => {
      event.preventDefault();
      const name = nameInput.value.trim();
      const problem = nameProblem(name);
      if (problem) {
        nameError.textContent = problem;
        nameInput.focus();
        return;
      }
      localStorage.setItem(NAME_STORAGE, name);
      done(name);
    };
    const cancel = (event) => {
      event.preventDefault();
      done(null);
    };
    nameDialog.addEventListener("submit", submit);
    nameDialog.addEventListener("cancel", cancel);
    $("name-cancel").onclick = () => done(null);
    nameDialog.showModal();
    nameInput.focus();
  });
}

export function nameDialogOpen() {
  return nameDialog.open;
}

// Copy the link; the field stays selectable for a browser that refuses the clipboard.
$("room-copy").addEventListener("click", async () => {
  link.select();
  try {
    await navigator.clipboard.writeText(link.value);
    setRoomStatus("Link copied: anyone with it and an API key of your tenant can join.");
  } catch {
    setRoomStatus("Copy this page’s address to invite others: it is the room’s link.");
  }
});
