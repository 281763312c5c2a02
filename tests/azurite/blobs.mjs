// Azurite helper for Conclave's tests: `node blobs.mjs create <port> <container>` creates a
// container; `node blobs.mjs list <port> <container>` prints its blob names, one a line.
// Uses Azurite's published development account (not a secret).
import { BlobServiceClient } from "@azure/storage-blob";

const [command, port, container] = process.argv.slice(2);
const account = "devstoreaccount1";
const key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const service = BlobServiceClient.fromConnectionString(
  `DefaultEndpointsProtocol=http;AccountName=${account};AccountKey=${key};BlobEndpoint=http://127.0.0.1:${port}/${account};`,
);
const client = service.getContainerClient(container);
if (command === "create") {
  await client.createIfNotExists();
} else if (command === "list") {
  for await (const blob of client.listBlobsFlat()) console.log(blob.name);
} else {
  console.error("usage: node blobs.mjs create|list <port> <container>");
  process.exit(2);
}
