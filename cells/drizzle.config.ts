// drizzle-kit reads this to generate SQL migrations from the schema: `npm run db:generate -w @cellwire/cells`.
// Generation needs no database; workers apply the migrations at start (src/store/database.ts).
import { defineConfig } from "drizzle-kit";

export default defineConfig({
  dialect: "postgresql",
  schema: "./src/store/schema.ts",
  out: "./drizzle",
  strict: true,
  verbose: true,
});
