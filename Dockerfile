# One image for every Cellwire service; compose.yaml picks the service by its command.
# Node 20 on Debian (glibc): the edge's uWebSockets.js binary is built for Node 20 (ABI 115) on glibc, and
# the edge refuses to start on its JavaScript fallback (docs/decisions/0002-uwebsockets-pin.md). Do not
# switch to an Alpine (musl) or Node 22 base.
FROM node:20-bookworm-slim

WORKDIR /app
ENV NODE_ENV=production

# Manifests first, so that the dependency layer is rebuilt only when they change.
COPY package.json package-lock.json tsconfig.base.json tsconfig.json ./
COPY protocol/package.json protocol/
COPY cluster/package.json cluster/
COPY directory/package.json directory/
COPY cells/package.json cells/
COPY edge/package.json edge/
COPY client/package.json client/
COPY web/package.json web/
COPY cli/package.json cli/
COPY cli/bin cli/bin
COPY loadtest/package.json loadtest/
# Test-only workspaces (the simulation, the shared test kit): their manifests only, so that `npm ci` finds
# every workspace the lockfile names; their code stays out of the image.
COPY sim/package.json sim/
COPY testkit/package.json testkit/
# Services run their TypeScript through tsx (docs/decisions/0001-typescript-5-9-not-7.md): no build step,
# so the type checker and test tools (devDependencies) stay out of the image.
RUN npm ci --omit=dev --no-audit --no-fund

COPY protocol protocol
COPY cluster cluster
COPY directory directory
COPY cells cells
COPY edge edge
COPY client client
COPY web web
COPY cli cli
COPY loadtest loadtest

# Dev-mode edges keep their signing key here; compose mounts a volume shared by the edges over it.
RUN mkdir -p .cellwire/dev-keys && chown -R node:node .cellwire
USER node
# compose.yaml sets the command per service; this default runs an edge.
CMD ["node", "--import", "tsx", "edge/src/main.ts"]
