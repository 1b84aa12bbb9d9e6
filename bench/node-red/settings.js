// Node-RED settings for `firmware-sim bench forward`, which starts Node-RED as
//   node node_modules/node-red/red.js --settings settings.js --userDir TMP TMP/flows.json
// with the flow copied into a fresh temporary userDir. Nothing listens: the
// editor and admin API are off (so there is no login to set up) and the flow
// has no http-in node. Nothing is fetched or reported: no telemetry or update
// check, no palette or module installs.
module.exports = {
    // If an HTTP server is ever turned on here, it stays on loopback.
    uiHost: "127.0.0.1",
    uiPort: 0,
    // No editor, no admin API, no http-in routes: Node-RED opens no port.
    httpAdminRoot: false,
    httpNodeRoot: false,
    disableEditor: true,
    // The flow holds no credentials; do not generate and store a key.
    credentialSecret: false,
    flowFilePretty: true,
    diagnostics: { enabled: false, ui: false },
    runtimeState: { enabled: false, ui: false },
    telemetry: { enabled: false, updateNotification: false },
    externalModules: {
        autoInstall: false,
        palette: { allowInstall: false, allowUpdate: false, allowUpload: false },
        modules: { allowInstall: false },
    },
    editorTheme: { projects: { enabled: false }, tours: false },
    functionExternalModules: false,
    // The http request node's default timeout (ms), stated so the bench does
    // not depend on a changed default.
    httpRequestTimeout: 5000,
    logging: {
        // One line per failed request at "error"; "warn" keeps them, since
        // they are what an operator of such a flow would see.
        console: { level: "info", metrics: false, audit: false },
    },
};
