// The README's JavaScript example: caption a photo with @gradio/client, under Node.
//   node describe.mjs APP_URL PHOTO
import { readFile } from "node:fs/promises";
import { Client } from "@gradio/client";

const [url, path] = process.argv.slice(2);
const app = await Client.connect(url);
const photo = new Blob([await readFile(path)], { type: "image/jpeg" });
// /describe: the caption, the photo's familiarity (0-1) and whether it is unfamiliar
const described = await app.predict("/describe", { image: photo, beam_size: 3 });
// /caption: the caption and the table of the best captions, as the page shows them
const captioned = await app.predict("/caption", { image: photo, beam_size: 3 });
console.log(JSON.stringify({ describe: described.data[0], caption: captioned.data[0] }));
process.exit(0);
