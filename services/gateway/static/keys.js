// The API key (its dialog, and the dev-mode probe) and the model picker.
import { hideNotice, showNotice } from "./view.js";
import { authHeaders } from "./stream.js";

const $ = (id) => document.getElementById(id);
const modelSelect = $("model");
const keyDialog = $("key-dialog");
const keyForm = $("key-form");
const keyInput = $("key-input");
const keyError = $("key-error");

// sessionStorage: the key lives as long as the tab, and never leaves this origin.
const KEY_STORAGE = "tokenbus.apiKey";
const MODEL_STORAGE = "tokenbus.model";
const ALIASES = ["auto", "small", "large"];
const LABELS = { auto: "auto (routed per prompt)", small: "small tier", large: "large tier" };

let apiKey = sessionStorage.getItem(KEY_STORAGE);
let devMode = false;
let onKey = () => {};

/** The key the API requests carry, or null before one was entered. */
export function currentKey() {
  return apiKey;
}

/** The model the picker names. */
export function chosenModel() {
  return modelSelect.value;
}

export function keyDialogOpen() {
  return keyDialog.open;
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

export function openKeyDialog(message = "") {
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
  $("prompt").focus();
  onKey(key);
}

modelSelect.addEventListener("change", () => sessionStorage.setItem(MODEL_STORAGE, modelSelect.value));
$("change-key").addEventListener("click", () => openKeyDialog());
$("notice-key").addEventListener("click", () => openKeyDialog());

/**
 * Is this a dev-mode gateway (models answer without a key)? Asks for a key when there is
 * none, or says so when the saved one is refused. `keyed(key)` runs whenever a key is entered
 * (and resolves `startKeys` itself when the tab already has one).
 */
export async function startKeys(keyed) {
  onKey = keyed;
  fillModels([]);
  const probe = await fetchModels(null);
  devMode = probe?.ok === true;
  for (const hint of document.querySelectorAll(".dev-hint")) hint.hidden = !devMode;
  if (probe === null) showNotice("Could not reach the gateway. Check that it is running, then reload.");
  if (!apiKey) {
    openKeyDialog();
    return;
  }
  if (!devMode) {
    const response = await fetchModels(apiKey);
    if (response?.status === 401 || response?.status === 403) {
      showNotice("The saved API key is no longer accepted. Choose “API key” to enter another one.", {
        keyAction: true,
      });
      return;
    }
  }
  await keyed(apiKey);
}
