// Kinnekt's web pixel: the storefront's standard customer events, slimmed to what Kinnekt's segments use,
// sent in small batches to Kinnekt's endpoint (POST {settings.endpoint}, text/plain JSON: a CORS "simple"
// request, no preflight, no cookies). Runs in Shopify's strict sandbox; Shopify applies the visitor's
// privacy choices before any event reaches it. See docs/storefront.md for the batch format.
import {register} from "@shopify/web-pixels-extension";

const EVENTS = [
  "page_viewed", "product_viewed", "collection_viewed", "search_submitted",
  "product_added_to_cart", "cart_viewed", "checkout_started",
];
const MAX_BATCH = 20; // events per request (the endpoint takes up to 50)
const FLUSH_MS = 1000; // a page's events (page_viewed, product_viewed...) arrive together: one request
const MAX_URL = 2048;

function text(value, limit) {
  return typeof value === "string" ? value.slice(0, limit) : undefined;
}

function money(value) {
  return value && typeof value === "object" ? {amount: value.amount, currencyCode: value.currencyCode} : undefined;
}

function variant(value) {
  if (!value || !value.product || value.product.id == null) return null;
  return {id: value.id, price: money(value.price), product: {id: value.product.id}};
}

function address(value) {
  return value ? {phone: text(value.phone, 32), countryCode: value.countryCode} : undefined;
}

// The event as Shopify gave it, keeping only the fields Kinnekt reads; null when a field it needs is missing.
function slim(event) {
  const data = event.data || {};
  const href = event.context && event.context.document && event.context.document.location
    ? text(event.context.document.location.href, MAX_URL) : undefined;
  const out = {
    id: event.id, name: event.name, timestamp: event.timestamp, clientId: event.clientId,
    context: {document: {location: {href}}}, data: {},
  };
  switch (event.name) {
    case "product_viewed":
      out.data.productVariant = variant(data.productVariant);
      if (!out.data.productVariant) return null;
      break;
    case "collection_viewed":
      if (!data.collection || data.collection.id == null) return null;
      out.data.collection = {id: data.collection.id};
      break;
    case "search_submitted":
      if (!data.searchResult || typeof data.searchResult.query !== "string") return null;
      out.data.searchResult = {query: text(data.searchResult.query, 255)};
      break;
    case "product_added_to_cart": {
      const line = data.cartLine;
      const merchandise = line ? variant(line.merchandise) : null;
      if (!merchandise) return null;
      out.data.cartLine = {quantity: line.quantity, merchandise,
        cost: {totalAmount: money(line.cost && line.cost.totalAmount)}};
      break;
    }
    case "cart_viewed":
      out.data.cart = data.cart ? {cost: {totalAmount: money(data.cart.cost && data.cart.cost.totalAmount)}} : null;
      break;
    case "checkout_started": {
      const checkout = data.checkout;
      if (!checkout) return null;
      out.data.checkout = {
        token: checkout.token, totalPrice: money(checkout.totalPrice), currencyCode: checkout.currencyCode,
        phone: text(checkout.phone, 32), shippingAddress: address(checkout.shippingAddress),
        billingAddress: address(checkout.billingAddress),
      };
      break;
    }
    default:
      break;
  }
  return out;
}

register(({analytics, browser, init, settings}) => {
  const endpoint = settings && settings.endpoint;
  const key = settings && settings.shopKey;
  if (!endpoint || !key) return; // not connected by the app yet
  const customer = init && init.data && init.data.customer && init.data.customer.id != null
    ? {id: init.data.customer.id} : null;
  let pending = [];
  let timer = null;

  function send(events) {
    const body = JSON.stringify({key, customer, events});
    // sendBeacon survives the page going away (a checkout starting); fetch with keepalive is the fallback.
    const viaBeacon = browser && typeof browser.sendBeacon === "function"
      ? Promise.resolve(browser.sendBeacon(endpoint, body)).catch(() => false) : Promise.resolve(false);
    return viaBeacon.then((queued) => {
      if (queued) return true;
      return fetch(endpoint, {method: "POST", body, keepalive: true, credentials: "omit",
        headers: {"Content-Type": "text/plain"}}).then((r) => r.ok, () => false);
    });
  }

  function flush() {
    if (timer !== null) { clearTimeout(timer); timer = null; }
    while (pending.length) send(pending.splice(0, MAX_BATCH));
  }

  EVENTS.forEach((name) => analytics.subscribe(name, (event) => {
    const kept = slim(event);
    if (!kept) return;
    pending.push(kept);
    if (pending.length >= MAX_BATCH || name === "checkout_started") flush();
    else if (timer === null) timer = setTimeout(flush, FLUSH_MS);
  }));
});
