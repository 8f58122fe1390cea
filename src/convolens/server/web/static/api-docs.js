// convolens /docs: starts the vendored Swagger UI (static/swagger-ui-bundle.js) on the app's own
// /openapi.json. A file, not an inline script, so the page keeps the dashboard's Content-Security-Policy.
(function () {
  "use strict";
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapi,
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    presets: [SwaggerUIBundle.presets.apis],
    deepLinking: true,
    validatorUrl: null, // no badge fetched from validator.swagger.io: nothing leaves this origin
  });
})();
