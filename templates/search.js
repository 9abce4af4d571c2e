// Search for the static copy of the registry: filters the prebuilt index
// (search-index.js) in the browser. Reads the same query parameters as the
// live search page (q, domain, mode, is_real), so links into it work alike.
(function () {
  "use strict";
  var index = window.PERSONAS_SEARCH_INDEX;
  var list = document.getElementById("static-results");
  var count = document.getElementById("static-count");
  var note = document.getElementById("static-note");
  if (!index || !list) { return; }
  // The site's root, from this script's own address: works under any sub-path and from file://.
  var root = document.currentScript.src.replace(/search\.js(\?.*)?$/, "");
  var params = new URLSearchParams(window.location.search);
  var form = document.querySelector("form.search-box");
  ["q", "domain", "mode", "is_real"].forEach(function (name) {
    var field = form && form.elements[name];
    if (field && params.has(name)) { field.value = params.get(name); }
  });
  var words = (params.get("q") || "").toLowerCase().split(/\s+/).filter(Boolean);
  var domain = params.get("domain") || "";
  var mode = params.get("mode") || "";
  var isReal = params.get("is_real") || "";
  if (!words.length && !domain && !mode && !isReal) { return; }

  // Every word must occur; a word in the name counts most, then domains, then the rest.
  function score(persona) {
    var total = 0;
    for (var i = 0; i < words.length; i++) {
      var word = words[i];
      if (persona.name.toLowerCase().indexOf(word) >= 0) { total += 10; }
      else if (persona.domains.join(" ").toLowerCase().indexOf(word) >= 0) { total += 5; }
      else if (persona.text.toLowerCase().indexOf(word) >= 0) { total += 1; }
      else { return -1; }
    }
    return total;
  }
  var found = [];
  index.personas.forEach(function (persona) {
    if (domain && persona.domains.indexOf(domain) < 0) { return; }
    if (mode && persona.modes.indexOf(mode) < 0) { return; }
    if (isReal && String(persona.is_real) !== isReal) { return; }
    var points = score(persona);
    if (points >= 0) { found.push({ persona: persona, points: points }); }
  });
  found.sort(function (a, b) { return b.points - a.points || a.persona.name.localeCompare(b.persona.name); });

  // Text goes in through textContent only: persona fields are never parsed as HTML.
  found.forEach(function (hit) {
    var item = document.createElement("li");
    var link = document.createElement("a");
    link.href = root + hit.persona.href;
    link.textContent = hit.persona.name;
    var domains = document.createElement("span");
    domains.className = "domains";
    domains.textContent = hit.persona.domains.join(", ");
    item.appendChild(link);
    item.appendChild(document.createTextNode(" "));
    item.appendChild(domains);
    list.appendChild(item);
  });
  count.textContent = String(found.length);
  note.textContent = found.length ? "" : "No persona matches.";
})();
