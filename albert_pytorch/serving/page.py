"""`GET /`: one small page to try the model: a text box, the labels with score bars, the latency. No external
assets; it calls `/predict` as any client does (with the API key typed into it, when the server has one)."""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>albert_pytorch</title>
<style>
  body { font-family: sans-serif; max-width: 40rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
  textarea { width: 100%; height: 5rem; font-size: 1rem; }
  .row { display: flex; align-items: center; margin: .3rem 0; }
  .label { width: 10rem; overflow: hidden; text-overflow: ellipsis; }
  .bar { height: 1rem; background: #4a7; margin: 0 .5rem; }
  .score { font-variant-numeric: tabular-nums; }
  #error { color: #b22; }
  #key { width: 12rem; }
</style>
</head>
<body>
<h1>albert_pytorch</h1>
<p id="model"></p>
<textarea id="text" placeholder="Type a sentence">a joy to watch , warm and funny .</textarea>
<p>
  <button id="go">Classify</button>
  <input id="key" type="password" placeholder="API key (if the server has one)">
</p>
<div id="scores"></div>
<p id="latency"></p>
<p id="error"></p>
<script>
const scores = document.getElementById("scores");
function headers() {
  const key = document.getElementById("key").value;
  return Object.assign({"Content-Type": "application/json"}, key ? {"Authorization": "Bearer " + key} : {});
}
async function classify() {
  document.getElementById("error").textContent = "";
  const started = performance.now();
  const response = await fetch("/predict", {method: "POST", headers: headers(),
    body: JSON.stringify({inputs: document.getElementById("text").value})});
  const body = await response.json();
  if (!response.ok) { document.getElementById("error").textContent = body.error; return; }
  const top = Math.max(...body.map(item => Math.abs(item.score)), 1e-9);
  scores.replaceChildren(...body.map(item => {
    const row = document.createElement("div");
    row.className = "row";
    row.dataset.label = item.label;
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = item.label;
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = (12 * Math.abs(item.score) / top) + "rem";
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = item.score.toFixed(4);
    row.append(label, bar, score);
    return row;
  }));
  document.getElementById("latency").textContent = "server " + response.headers.get("x-total-time") + " ms, round trip "
    + Math.round(performance.now() - started) + " ms";
}
document.getElementById("go").addEventListener("click", classify);
fetch("/info", {headers: headers()}).then(r => r.json()).then(info => {
  document.getElementById("model").textContent = info.model_id ? info.model_id + " (" + info.problem_type + ")" : "";
}).catch(() => {});
</script>
</body>
</html>
"""
