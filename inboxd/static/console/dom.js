// A tiny DOM builder: h("p", { class: "x", onclick: fn }, "text", child). Text is always a text
// node, never parsed as HTML, so what the API returns cannot become markup.
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name in node && !name.includes("-") && name !== "list") node[name] = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

export function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function replace(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

export function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "never";
}

// A status as a badge: the word itself carries the meaning, the colour only repeats it.
export function badge(status, extra = "") {
  const value = status || "UNKNOWN";
  return h("span", { class: `badge badge-${value.toLowerCase()} ${extra}`.trim() }, value);
}
