// /docs: Swagger UI over this server's OpenAPI document, all from this server (no CDN). On a server that needs an
// API key the document answers 401: the page asks for the key, then sends it as X-API-Key with the document's
// request and every "Try it out" request. The key stays in this page (never in a URL, never stored).
"use strict";

(() => {
  const form = document.getElementById("key-form");
  const input = document.getElementById("api-key");
  const status = document.getElementById("key-status");

  async function load(key) {
    const headers = key ? { "X-API-Key": key } : {};
    const r = await fetch("openapi.json", { headers, cache: "no-store" });
    if (r.status === 401) {
      form.hidden = false;
      status.textContent = key ? "that key was refused" : "this server needs an API key";
      input.focus();
      return;
    }
    if (!r.ok) {
      status.textContent = "the API description is unavailable (" + r.status + ")";
      form.hidden = false;
      return;
    }
    const spec = await r.json();
    form.hidden = true;
    window.ui = window.SwaggerUIBundle({
      spec,
      dom_id: "#swagger-ui",
      deepLinking: true,
      layout: "BaseLayout",
      presets: [window.SwaggerUIBundle.presets.apis],
      requestInterceptor: (req) => {
        if (key) req.headers["X-API-Key"] = key;
        return req;
      },
    });
  }

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    load(input.value.trim());
  });
  load("");
})();
