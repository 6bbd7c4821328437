// Which node served this page: the web channel's X-Served-By header (served_by = true in
// conf/iwayfailover.ini), read from a HEAD request to this same page.
fetch(location.pathname, {method: "HEAD", cache: "no-store"}).then(function (response) {
  var who = response.headers.get("X-Served-By");
  document.getElementById("served-by").textContent = who ? "Served by " + who + "." : "No X-Served-By header (served_by = true is not set).";
}).catch(function () {
  document.getElementById("served-by").textContent = "Nobody answers: is a node live?";
});
