// Credentials for the dashboard when the agents run with ACLs on. The
// token comes from the page's fragment (/ui/#token=SECRET, which browsers
// never send to the server) or from the form shown after a 401, and is kept
// in this tab's sessionStorage only. Every fetch then carries it as a
// bearer token, and since EventSource cannot send headers, the change
// stream is read with fetch instead (same events, same reconnection with
// Last-Event-ID). Loaded before app.js; without a token nothing changes.
(function () {
  "use strict";
  const KEY = "switchyard-token";
  const frag = new URLSearchParams(location.hash.slice(1));
  if (frag.get("token")) {
    sessionStorage.setItem(KEY, frag.get("token"));
    history.replaceState(null, "", location.pathname + location.search);
  }
  const token = () => sessionStorage.getItem(KEY) || "";

  let asked = false;
  function askForToken(status) {
    if (asked) return;
    asked = true;
    const box = document.createElement("form");
    box.id = "token-form";
    box.className = "banner warn";
    const msg = document.createElement("span");
    msg.textContent = (status === 403 ? "This token may not read the cluster." : "The agents require a token (ACLs are on).") + " Token: ";
    const input = document.createElement("input");
    input.type = "password";
    input.name = "token";
    input.autocomplete = "off";
    const btn = document.createElement("button");
    btn.type = "submit";
    btn.textContent = "use";
    box.append(msg, input, btn);
    box.addEventListener("submit", (e) => {
      e.preventDefault();
      sessionStorage.setItem(KEY, input.value.trim());
      location.reload();
    });
    const place = () => document.body.prepend(box);
    if (document.body) place(); else document.addEventListener("DOMContentLoaded", place);
  }

  const origFetch = window.fetch.bind(window);
  window.fetch = async (input, init = {}) => {
    const t = token();
    if (t) {
      const headers = new Headers(init.headers || {});
      headers.set("Authorization", "Bearer " + t);
      init = Object.assign({}, init, { headers });
    }
    const r = await origFetch(input, init);
    if (r.status === 401 || r.status === 403) askForToken(r.status);
    return r;
  };

  // FetchEventSource is the part of EventSource app.js uses, over fetch.
  class FetchEventSource {
    constructor(url) {
      this.url = url;
      this.readyState = FetchEventSource.CONNECTING;
      this.lastEventId = "";
      this.listeners = {};
      this.ctl = null;
      this.connect();
    }
    addEventListener(type, fn) { (this.listeners[type] = this.listeners[type] || []).push(fn); }
    dispatch(type, ev) { for (const fn of this.listeners[type] || []) fn(ev); }
    close() {
      this.readyState = FetchEventSource.CLOSED;
      if (this.ctl) this.ctl.abort();
    }
    async connect() {
      this.ctl = new AbortController();
      const headers = { Accept: "text/event-stream" };
      if (this.lastEventId) headers["Last-Event-ID"] = this.lastEventId;
      let resp;
      try {
        resp = await window.fetch(this.url, { headers, cache: "no-store", signal: this.ctl.signal });
      } catch (_) {
        return this.retry();
      }
      if (!resp.ok || !resp.body) { // refused (410 compacted, 401...): like EventSource, give up
        this.readyState = FetchEventSource.CLOSED;
        this.dispatch("error", {});
        return;
      }
      this.readyState = FetchEventSource.OPEN;
      this.dispatch("open", {});
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "", type = "", data = [], id = null;
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value;
          let nl;
          while ((nl = buf.indexOf("\n")) >= 0) {
            const line = buf.slice(0, nl).replace(/\r$/, "");
            buf = buf.slice(nl + 1);
            if (line === "") {
              if (id !== null) this.lastEventId = id;
              if (data.length) this.dispatch(type || "message", { data: data.join("\n"), lastEventId: this.lastEventId });
              type = ""; data = []; id = null;
              continue;
            }
            if (line.startsWith(":")) continue;
            const colon = line.indexOf(":");
            const field = colon < 0 ? line : line.slice(0, colon);
            const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
            if (field === "event") type = val;
            else if (field === "data") data.push(val);
            else if (field === "id") id = val;
          }
        }
      } catch (_) { /* dropped: reconnect below */ }
      this.retry();
    }
    retry() {
      if (this.readyState === FetchEventSource.CLOSED) return;
      this.readyState = FetchEventSource.CONNECTING;
      this.dispatch("error", {});
      setTimeout(() => { if (this.readyState !== FetchEventSource.CLOSED) this.connect(); }, 1000);
    }
  }
  FetchEventSource.CONNECTING = 0;
  FetchEventSource.OPEN = 1;
  FetchEventSource.CLOSED = 2;

  if (token() && typeof ReadableStream === "function" && typeof TextDecoderStream === "function") {
    window.EventSource = FetchEventSource;
  }
})();
