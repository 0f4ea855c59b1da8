// The chat page: talks to /v1/chat/completions and /v1/reactions with the user's bearer token.
// Text is always inserted with textContent, never as HTML: answers come from a model.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { messages: [], conversationId: null };

$("token").value = localStorage.getItem("rluf-token") || "";
$("token").addEventListener("change", () => localStorage.setItem("rluf-token", $("token").value.trim()));

function status(text) { $("status").textContent = text || ""; }

async function api(path, body) {
  const res = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", "Authorization": "Bearer " + $("token").value.trim() },
    body: JSON.stringify(body),
  });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error((data.error && data.error.message) || ("HTTP " + res.status));
  return data;
}

function bubble(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  div.textContent = text;
  $("log").appendChild(div);
  return div;
}

function loveButton(responseId) {
  const btn = document.createElement("button");
  btn.type = "button";
  btn.className = "love";
  btn.dataset.responseId = responseId;
  btn.setAttribute("aria-pressed", "false");
  btn.setAttribute("aria-label", "Love this answer");
  btn.textContent = "❤️";
  btn.addEventListener("click", async () => {
    const on = btn.getAttribute("aria-pressed") !== "true";
    btn.disabled = true;
    try {
      await api("/v1/reactions", { response_id: responseId, reaction: "love", removed: !on });
      btn.setAttribute("aria-pressed", on ? "true" : "false");
      status("");
    } catch (e) {
      status("reaction not saved: " + e.message);
    } finally {
      btn.disabled = false;
    }
  });
  return btn;
}

$("chat").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const text = $("input").value.trim();
  if (!text) return;
  localStorage.setItem("rluf-token", $("token").value.trim());
  bubble("user", text);
  $("input").value = "";
  $("send").disabled = true;
  status("");
  const history = state.messages.concat([{ role: "user", content: text }]);
  const body = { messages: history };
  if (state.conversationId) body.conversation_id = state.conversationId;
  try {
    const data = await api("/v1/chat/completions", body);
    const answer = data.choices[0].message.content;
    state.messages = history.concat([{ role: "assistant", content: answer }]);
    state.conversationId = data.conversation_id;
    const div = bubble("assistant", answer);
    div.dataset.responseId = data.id;
    const meta = document.createElement("div");
    meta.className = "meta";
    meta.appendChild(loveButton(data.id));
    const arm = document.createElement("span");
    arm.textContent = data.model;
    meta.appendChild(arm);
    div.appendChild(meta);
  } catch (e) {
    state.messages = history.slice(0, -1);
    status("not sent: " + e.message);
  } finally {
    $("send").disabled = false;
  }
});

$("input").addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); $("chat").requestSubmit(); }
});

$("new-chat").addEventListener("click", () => {
  state.messages = [];
  state.conversationId = null;
  $("log").textContent = "";
  status("");
});
