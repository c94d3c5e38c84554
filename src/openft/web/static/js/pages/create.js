// Placeholder: replaced by the page's owner.
import { empty } from "../ui.js";

export async function render(root) {
  root.append(empty("This page is being built."));
}
