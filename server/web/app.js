// kuamo search page: builds the JSON requests of the HTTP API (canonical proto JSON) and draws the answers.
"use strict";
const $ = (id) => document.getElementById(id);
let photoB64 = null;            // the query photo, base64 (proto bytes in JSON)
let lastQuery = null;           // what "search" last sent, re-run after a click to show personalisation

function headers() {
  const h = { "Content-Type": "application/json" };
  const token = $("token").value.trim();
  if (token) h.Authorization = "Bearer " + token;
  return h;
}

async function call(path, body, ndjson) {
  const t0 = performance.now();
  const r = await fetch(path, { method: "POST", headers: ndjson ? { ...headers(), "Content-Type": "application/x-ndjson" } : headers(),
                                body: ndjson ? body : JSON.stringify(body) });
  const answer = await r.json();
  if (!r.ok) throw new Error(answer.error ? `${answer.error.status}: ${answer.error.message}` : r.statusText);
  answer.roundTripMs = performance.now() - t0;
  return answer;
}

function status(text, error) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

function filters() {
  const f = {};
  if ($("category").value) f.categoryPrefix = $("category").value;
  if ($("price-min").value !== "") f.priceMin = Number($("price-min").value);
  if ($("price-max").value !== "") f.priceMax = Number($("price-max").value);
  return f;
}

async function search() {
  const text = $("q").value.trim();
  if (!text && !photoB64) { status("type something or give a photo"); return; }
  const query = { k: 24, explain: true, filters: filters() };
  if (text) query.text = text;
  if (photoB64) query.image = photoB64;
  if (text && photoB64) {                      // the slider only means something with both
    const w = Number($("weight").value);
    query.weights = { image: w, text: 1 - w };
  }
  if ($("user").value.trim()) query.userId = $("user").value.trim();
  lastQuery = query;
  try {
    const res = await call("/v1/Search", { query });
    draw(res, `${res.hits.length} results`);
  } catch (e) { status(e.message, true); }
}

async function moreLike(key) {
  try {
    const res = await call("/v1/Recommend", { positives: [{ key }], k: 24, explain: true, filters: filters() });
    draw(res, `more like product ${key}`);
  } catch (e) { status(e.message, true); }
}

async function recordClick(key, card) {
  const user = $("user").value.trim();
  if (!user) return;
  try {
    await call("/v1/RecordEvents", JSON.stringify({ userId: user, productKey: key, kind: "click" }), true);
    card.classList.add("clicked");
    if (lastQuery) { lastQuery.userId = user; draw(await call("/v1/Search", { query: lastQuery }), `re-ranked for ${user}`); }
  } catch (e) { status(e.message, true); }
}

async function photoUrl(key) {
  const r = await fetch(`/photos/${encodeURIComponent(key)}`, { headers: headers() });
  return r.ok ? URL.createObjectURL(await r.blob()) : "";
}

function bars(explanation) {
  const div = document.createElement("div");
  const parts = Object.entries((explanation && explanation.contributions) || {});
  const top = Math.max(0.01, ...parts.map(([, v]) => Math.abs(v)));
  for (const [name, v] of parts.sort((a, b) => b[1] - a[1])) {
    const row = document.createElement("div");
    row.className = "bar";
    row.innerHTML = `<span></span><i></i><span></span>`;
    row.children[0].textContent = name;
    row.children[1].style.width = `${Math.round(90 * Math.abs(v) / top)}px`;
    if (v < 0) row.children[1].className = "neg";
    row.children[2].textContent = v.toFixed(3);
    div.appendChild(row);
  }
  return div;
}

function draw(res, what) {
  const main = $("results");
  main.replaceChildren();
  for (const hit of res.hits) {
    const p = hit.product || {};
    const card = $("card").content.firstElementChild.cloneNode(true);
    const key = hit.key || String(hit.id);  // the catalog's id (string ids are not numbers)
    card.dataset.id = key;
    card.querySelector(".title").textContent = p.title || `product ${key}`;
    const meta = [p.category, p.price !== undefined ? `¥${p.price}` : null,
                  p.rating !== undefined ? `★ ${p.rating}` : null, `score ${hit.score.toFixed(3)}`];
    card.querySelector(".meta").textContent = meta.filter(Boolean).join(" · ");
    card.querySelector(".why").appendChild(bars(hit.explanation));
    photoUrl(key).then((url) => { if (url) card.querySelector(".thumb").src = url; });
    card.querySelector(".thumb").alt = p.title || "";
    card.querySelector(".more").addEventListener("click", (e) => { e.stopPropagation(); moreLike(key); });
    card.addEventListener("click", () => recordClick(key, card));
    main.appendChild(card);
  }
  const server = res.timings ? `server ${res.timings.totalMs.toFixed(1)} ms` : "";
  status(`${what} · ${server} · round trip ${res.roundTripMs.toFixed(1)} ms`);
}

function takePhoto(file) {
  if (!file || !file.type.startsWith("image/")) return;
  const reader = new FileReader();
  reader.onload = () => {
    photoB64 = reader.result.split(",", 2)[1];
    $("dropped-img").src = reader.result;
    $("dropped").hidden = false;
    search();
  };
  reader.readAsDataURL(file);
}

async function loadCategories() {
  try {
    const r = await fetch("/v1/categories", { headers: headers() });
    if (!r.ok) return;
    const prefixes = new Set();
    for (const c of (await r.json()).categories) {  // offer the first two levels of every path
      const parts = c.split("/");
      prefixes.add(parts[0]);
      if (parts.length > 1) prefixes.add(parts.slice(0, 2).join("/"));
    }
    for (const p of [...prefixes].sort()) $("category").add(new Option(p, p));
  } catch (e) { /* the page still searches without the filter */ }
}

$("search").addEventListener("submit", (e) => { e.preventDefault(); search(); });
$("photo").addEventListener("change", (e) => takePhoto(e.target.files[0]));
$("clear-photo").addEventListener("click", () => { photoB64 = null; $("dropped").hidden = true; $("photo").value = ""; });
$("weight").addEventListener("input", () => { $("weight-out").value = Number($("weight").value).toFixed(2); });
for (const id of ["category", "price-min", "price-max"]) $(id).addEventListener("change", () => lastQuery && search());
document.addEventListener("dragover", (e) => e.preventDefault());
document.addEventListener("drop", (e) => { e.preventDefault(); takePhoto(e.dataTransfer.files[0]); });
document.addEventListener("paste", (e) => {
  const item = [...e.clipboardData.items].find((i) => i.type.startsWith("image/"));
  if (item) takePhoto(item.getAsFile());
});
$("token").addEventListener("change", loadCategories);
loadCategories();
