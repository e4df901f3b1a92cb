// Reference parser: node mailparser (simpleParser), batch mode.
// Reads a JSON list of message paths on stdin, prints JSON {path: [sha256 of every attachment]}
// (each also as "n:" + the sha256 of its line-end-normalised text, for comparing real mail).
// An attached message (message/*) is parsed again, as a mail client opening it would.
"use strict";
const fs = require("fs");
const crypto = require("crypto");
const { simpleParser } = require("mailparser");

const MAX_DEPTH = 40;

async function extract(source, depth, hashes) {
    const mail = await simpleParser(source, { skipHtmlToText: true, skipTextToHtml: true, skipTextLinks: true });
    for (const attachment of mail.attachments || []) {
        const content = attachment.content || Buffer.alloc(0);
        hashes.push(crypto.createHash("sha256").update(content).digest("hex"));
        const normal = content.toString("latin1").replace(/\r\n/g, "\n").replace(/[\r\n]+$/, "");
        hashes.push("n:" + crypto.createHash("sha256").update(Buffer.from(normal, "latin1")).digest("hex"));
        const type = (attachment.contentType || "").toLowerCase();
        if (type.startsWith("message/") && depth < MAX_DEPTH) {
            try {
                await extract(content, depth + 1, hashes);
            } catch (error) {
                // an attached message that does not parse extracts nothing more
            }
        }
    }
}

async function main() {
    const paths = JSON.parse(fs.readFileSync(0, "utf8"));
    const result = {};
    for (const path of paths) {
        const hashes = [];
        try {
            await extract(fs.readFileSync(path), 0, hashes);
        } catch (error) {
            process.stderr.write(`ref_mailparser: ${path}: ${error.name}\n`);
        }
        result[path] = hashes;
    }
    process.stdout.write(JSON.stringify(result));
}

main();
