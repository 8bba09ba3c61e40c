/*
 * The Shopify session token on every htmx request.
 *
 * App Bridge adds `Authorization: Bearer <id token>` to fetch() only; htmx 2 uses XMLHttpRequest. So each
 * htmx request is held in `htmx:confirm` until `shopify.idToken()` resolves (App Bridge caches the token
 * while it is valid), then issued, and `htmx:configRequest` sets the header. A 401 that carries
 * X-Shopify-Retry-Invalid-Session-Request is retried once with a fresh token.
 *
 * Outside the Shopify admin (the demo, tests) there is no `window.shopify` and this file does nothing.
 */
(function () {
  'use strict';

  var shopify = window.shopify;
  if (!shopify || typeof shopify.idToken !== 'function' || !window.htmx) {
    return;
  }

  var RETRY_HEADER = 'X-Shopify-Retry-Invalid-Session-Request';
  var RETRIED_HEADER = 'X-Kinnekt-Session-Retry';
  var idToken = null;

  document.addEventListener('htmx:confirm', function (evt) {
    evt.preventDefault();
    // We took over confirmation, so keep hx-confirm working.
    var question = evt.detail.question;
    if (question && !window.confirm(question)) {
      return;
    }
    shopify.idToken().then(function (token) {
      idToken = token;
    }).catch(function () {
      idToken = null; // the server answers 401 and the retry below asks again
    }).then(function () {
      evt.detail.issueRequest(true); // true: the confirmation was already handled
    });
  });

  document.addEventListener('htmx:configRequest', function (evt) {
    if (idToken) {
      evt.detail.headers['Authorization'] = 'Bearer ' + idToken;
    }
  });

  // Listeners run before extensions: preventing the default here stops response-targets from showing
  // the 401 and the swap, and the request goes out again once.
  document.addEventListener('htmx:beforeSwap', function (evt) {
    var xhr = evt.detail.xhr;
    var config = evt.detail.requestConfig;
    if (!xhr || xhr.status !== 401 || xhr.getResponseHeader(RETRY_HEADER) !== '1' || !config) {
      return;
    }
    if (config.headers && config.headers[RETRIED_HEADER]) {
      return; // already retried: let the error show
    }
    evt.preventDefault();
    idToken = null;
    var headers = {};
    headers[RETRIED_HEADER] = '1';
    window.htmx.ajax(config.verb.toUpperCase(), config.path, {
      source: config.elt,
      target: evt.detail.target,
      headers: headers
    });
  });
})();
