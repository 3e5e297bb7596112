// `npm run build -w @cellwire/web`: builds the dev web page into web/dist.
import { buildWebPage } from "./src/index.ts";

const distDirectory = await buildWebPage();
process.stdout.write(`built the web page into ${distDirectory}\n`);
