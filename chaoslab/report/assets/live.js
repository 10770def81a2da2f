// The live page: swaps in the server's newest snapshot every second, and stops once the
// run's final report is in. Fetches only from the page's own server.
(function () {
  var seq = document.body.dataset.seq;
  function swap(html) {
    var y = window.scrollY;
    document.getElementById("report").outerHTML = html;
    window.scrollTo(0, y);
  }
  function poll() {
    fetch("fragment", { cache: "no-store" })
      .then(function (r) {
        if (r.status !== 200) return null;
        return r.text().then(function (text) {
          return { text: text, seq: r.headers.get("X-Chaoslab-Seq"), done: r.headers.get("X-Chaoslab-Final") };
        });
      })
      .then(function (snap) {
        if (snap && snap.seq !== seq) {
          seq = snap.seq;
          swap(snap.text);
        }
        if (!snap || snap.done !== "1") setTimeout(poll, 1000);
      })
      .catch(function () {
        setTimeout(poll, 2000); // the run is over and its server gone, or a hiccup: try again later
      });
  }
  setTimeout(poll, 1000);
})();
