// Numbers in the reader's locale, times in the browser's time zone.
const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const decimal = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
const usdFormats = new Map();
const UNITS = { s: "second", m: "minute", h: "hour", d: "day" };

export const count = (n) => integer.format(n ?? 0);
export const ms = (n) => (n === null || n === undefined ? "–" : `${decimal.format(n)} ms`);
export const unitName = (unit) => UNITS[unit] || unit;

// Small spends need more digits than cents: $0.000123 stays readable.
export function usd(n) {
  const value = n ?? 0;
  const digits = value !== 0 && Math.abs(value) < 0.01 ? 6 : 2;
  if (!usdFormats.has(digits)) {
    usdFormats.set(digits, new Intl.NumberFormat(undefined, {
      style: "currency", currency: "USD", minimumFractionDigits: 2, maximumFractionDigits: digits,
    }));
  }
  return usdFormats.get(digits).format(value);
}

export const time = (unixSeconds) =>
  unixSeconds ? dateTime.format(new Date(unixSeconds * 1000)) : "–";

export function keyState(key, now = Date.now() / 1000) {
  if (key.revoked) return "revoked";
  if (key.expiresAt && now >= key.expiresAt) return "expired";
  return "active";
}

// A <datetime-local> value (local time) to unix seconds, and back.
export const fromLocalInput = (value) => (value ? new Date(value).getTime() / 1000 : undefined);
export function toLocalInput(unixSeconds) {
  const d = new Date(unixSeconds * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}
